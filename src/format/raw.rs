//! `raw`: key and value bytes, untouched, as nullable binary columns, and a `value` column's
//! bytes written back as they are.

use super::Decoder;
use crate::format::columns::{ColumnBuilder, ColumnSpec, ScalarType, Shape};
use crate::format::encode::{EncodedRows, RowsBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, FieldRef};

pub struct RawDecoder {
    key: ColumnBuilder,
    value: ColumnBuilder,
}

impl Default for RawDecoder {
    fn default() -> Self {
        let col = |name: &str| {
            ColumnBuilder::new(ColumnSpec {
                name: name.into(),
                ty: ScalarType::Binary,
                shape: Shape::Scalar,
                nullable: true,
            })
        };
        RawDecoder {
            key: col("key"),
            value: col("value"),
        }
    }
}

fn push(col: &mut ColumnBuilder, bytes: Option<&[u8]>) -> Result<(), String> {
    match bytes {
        Some(b) => {
            col.values.push_bytes(b, ScalarType::Binary)?;
            col.end_row()
        }
        None => col.push_null(),
    }
}

impl Decoder for RawDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        vec![self.key.field(), self.value.field()]
    }

    fn decode(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        push(&mut self.key, key)?;
        push(&mut self.value, value)
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![self.key.finish(), self.value.finish()]
    }
}

/// The `value` column's bytes (or text) as they are; a null is a message without a value.
pub(super) fn encode(batch: &RecordBatch) -> Result<EncodedRows, String> {
    let column = batch
        .column_by_name("value")
        .ok_or("the raw format writes the 'value' column, which is missing")?;
    let mut out = RowsBuilder::default();
    let mut present = Vec::with_capacity(column.len());
    let mut put = |v: Option<&[u8]>| {
        present.push(v.is_some());
        out.push(v.unwrap_or_default());
    };
    match column.data_type() {
        DataType::Binary => column.as_binary::<i32>().iter().for_each(&mut put),
        DataType::LargeBinary => column.as_binary::<i64>().iter().for_each(&mut put),
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .for_each(|v| put(v.map(str::as_bytes))),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .for_each(|v| put(v.map(str::as_bytes))),
        other => {
            return Err(format!(
                "the raw format needs a binary or string 'value' column, got {other}"
            ))
        }
    }
    let present = present.iter().any(|p| !p).then_some(present);
    Ok(out.finish(present))
}
