//! `tensor`: each message value is one fixed-shape array of little-endian elements, read into a
//! fixed-size-list column and written from one.

use super::{require_value, Decoder};
use crate::error::{Error, Result};
use crate::format::columns::{ColumnBuilder, ColumnSpec, ScalarType, Shape};
use crate::format::EncodedRows;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, FieldRef};
use std::collections::HashMap;
use std::sync::Arc;

#[cfg(target_endian = "big")]
compile_error!("the tensor format copies little-endian payloads as they are");

/// Field metadata key holding the per-row shape, so NumPy hand-off can restore N-D arrays.
pub const SHAPE_METADATA_KEY: &str = "kafka_ml.shape";

pub struct TensorDecoder {
    column: ColumnBuilder,
    shape: Vec<usize>,
    row_bytes: usize,
}

impl TensorDecoder {
    pub fn new(dtype: ScalarType, shape: Vec<usize>) -> Result<Self> {
        let width = dtype
            .byte_width()
            .ok_or_else(|| Error::Config(format!("tensor dtype must be numeric, got {}", dtype.name())))?;
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::Config(format!(
                "tensor shape must be non-empty with no zero dimension, got {shape:?}"
            )));
        }
        let elements: usize = shape.iter().product();
        let spec = ColumnSpec {
            name: "value".into(),
            ty: dtype,
            shape: Shape::Fixed(elements),
            nullable: false,
        };
        Ok(TensorDecoder {
            column: ColumnBuilder::new(spec),
            shape,
            row_bytes: elements * width,
        })
    }
}

impl Decoder for TensorDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        let shape = format!("{:?}", self.shape);
        let field: Field = self.column.spec.field();
        vec![Arc::new(field.with_metadata(HashMap::from([(
            SHAPE_METADATA_KEY.to_string(),
            shape,
        )])))]
    }

    fn decode(&mut self, _key: Option<&[u8]>, value: Option<&[u8]>) -> std::result::Result<(), String> {
        let value = require_value(value)?;
        if value.len() != self.row_bytes {
            return Err(format!(
                "tensor value is {} bytes, expected {} ({} × {:?})",
                value.len(),
                self.row_bytes,
                self.column.spec.ty.name(),
                self.shape
            ));
        }
        self.column.values.extend_le_bytes(value);
        self.column.end_row()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![self.column.finish()]
    }
}

/// The single fixed-size-list column's elements as they are, one row per message.
pub(super) fn encode(batch: &RecordBatch) -> Result<EncodedRows, String> {
    if batch.num_columns() != 1 {
        return Err(format!(
            "the tensor format writes one column, got {}",
            batch.num_columns()
        ));
    }
    let column = batch.column(0);
    let DataType::FixedSizeList(item, width) = column.data_type() else {
        return Err(format!(
            "the tensor format needs fixed-size rows, got {}",
            column.data_type()
        ));
    };
    let byte_width = item
        .data_type()
        .primitive_width()
        .ok_or_else(|| format!("tensor elements must be numbers, got {}", item.data_type()))?;
    let list = column.as_fixed_size_list();
    if list.null_count() > 0 || list.values().null_count() > 0 {
        return Err("tensor rows cannot hold nulls".into());
    }
    let row_bytes = *width as usize * byte_width;
    let values = list.values().to_data();
    let start = values.offset() * byte_width;
    // The rows are the values buffer as it is: little-endian already (the tensor format's byte
    // order on every supported target), and contiguous.
    let data = values.buffers()[0].slice_with_length(start, row_bytes * list.len());
    Ok(EncodedRows::fixed_width(data, row_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_array::Array;

    #[test]
    fn decodes_rows_and_rejects_wrong_length() {
        let mut d = TensorDecoder::new(ScalarType::Float32, vec![2, 2]).unwrap();
        let row: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        d.decode(None, Some(&row)).unwrap();
        let err = d.decode(None, Some(&row[..15])).unwrap_err();
        assert!(err.contains("15 bytes, expected 16"), "{err}");
        assert!(d.decode(None, None).unwrap_err().contains("tombstone"));
        d.decode(None, Some(&row)).unwrap();
        let cols = d.finish();
        let list = cols[0].as_fixed_size_list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.values().as_primitive::<Float32Type>().values(),
            &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(d.fields()[0].metadata()[SHAPE_METADATA_KEY], "[2, 2]");
    }
}
