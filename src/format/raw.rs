//! `raw`: key and value bytes, untouched, as nullable binary columns.

use super::Decoder;
use crate::schema::{ColumnBuilder, ColumnSpec, ScalarType, Shape};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;

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
