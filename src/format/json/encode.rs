//! JSON rows: one object per row, written by arrow-json straight into the buffer the rows are
//! sent from.

use crate::format::encode::{column_error, EncodedRows};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema};

/// Checks every row of a JSON send: afterwards encoding any slice of the batch cannot fail.
pub fn validate_json(batch: &RecordBatch) -> Result<(), String> {
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        reject_non_finite(field, column)?;
    }
    Ok(())
}

/// An upper bound on the bytes of any row's JSON, when the columns are all fixed-width
/// (numbers, booleans, fixed-size lists of numbers); `None` when a row's size depends on its
/// values (strings, binary, variable-length lists). Lets a send check `message.max.bytes`
/// before it has encoded every row.
pub fn json_row_bound(schema: &Schema) -> Option<usize> {
    // Longest text of one value: "-9223372036854775808" for integers, shortest round-trip
    // floats such as "-2.2250738585072014e-308" (24 characters), "false"; with room to spare.
    const VALUE: usize = 32;
    let mut bound = 2; // {}
    for field in schema.fields() {
        let number = |t: &DataType| t.is_integer() || t.is_floating() || *t == DataType::Boolean;
        let values = match field.data_type() {
            DataType::FixedSizeList(item, n) if number(item.data_type()) => 2 + *n as usize * (VALUE + 1),
            t if number(t) => VALUE,
            _ => return None,
        };
        // "name": value,  (names are escaped at most 6 bytes per byte)
        bound += 6 * field.name().len() + 4 + values;
    }
    Some(bound)
}

/// `explicit_nulls`: a null is written as `"name": null` rather than left out (JSON Schema
/// readers then see every property, as confluent's serializer writes them).
pub(in crate::format) fn encode(batch: &RecordBatch, explicit_nulls: bool) -> Result<EncodedRows, String> {
    validate_json(batch)?;
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(explicit_nulls)
        .build::<_, arrow_json::writer::LineDelimited>(Vec::with_capacity(batch.num_rows() * 64));
    writer
        .write(batch)
        .map_err(|e| format!("cannot write JSON: {e}"))?;
    writer.finish().map_err(|e| format!("cannot write JSON: {e}"))?;
    let data = writer.into_inner();
    // One object per line; JSON strings escape newlines, so every '\n' ends a row. The rows are
    // sent from the writer's buffer itself.
    let mut ranges = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', &data) {
        ranges.push((start, i));
        start = i + 1;
    }
    Ok(EncodedRows {
        data: Buffer::from_vec(data),
        ranges,
        present: None,
    })
}

/// JSON has no NaN or infinity (arrow-json would silently write null).
fn reject_non_finite(field: &Field, column: &ArrayRef) -> Result<(), String> {
    let values = match column.data_type() {
        DataType::FixedSizeList(_, _) => column.as_fixed_size_list().values().clone(),
        DataType::List(_) => column.as_list::<i32>().values().clone(),
        _ => column.clone(),
    };
    let width = match column.data_type() {
        DataType::FixedSizeList(_, w) => *w as usize,
        _ => 1,
    };
    let bad = match values.data_type() {
        DataType::Float32 => values
            .as_primitive::<Float32Type>()
            .iter()
            .position(|v| v.is_some_and(|v| !v.is_finite())),
        DataType::Float64 => values
            .as_primitive::<Float64Type>()
            .iter()
            .position(|v| v.is_some_and(|v| !v.is_finite())),
        _ => None,
    };
    match bad {
        Some(i) => Err(column_error(
            field.name(),
            i / width,
            "NaN or infinity has no JSON representation",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::format::columns::ColumnSpec;
    use crate::format::encode::{encode, EncodeFormat};
    use crate::format::{Decoder, JsonDecoder};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use std::sync::Arc;

    #[test]
    fn json_rows_decode_back() {
        let b =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef)]).unwrap();
        let rows = encode(&b, &EncodeFormat::Json).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.row(0).unwrap(), br#"{"id":7}"#);
        let mut d = JsonDecoder::new(vec![ColumnSpec::parse("id", "int64").unwrap()]).unwrap();
        d.decode(None, rows.row(1)).unwrap();
        assert_eq!(d.finish()[0].as_primitive::<Int64Type>().values(), &[8]);
        assert!(encode(
            &RecordBatch::try_from_iter([(
                "id",
                Arc::new(Float64Array::from(vec![f64::INFINITY])) as ArrayRef
            )])
            .unwrap(),
            &EncodeFormat::Json
        )
        .unwrap_err()
        .contains("no JSON representation"));
    }
}
