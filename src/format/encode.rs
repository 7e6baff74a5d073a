//! Encoders: Arrow record batches → one Kafka message value per row, written in Rust with no
//! Python object per row. The mirror of `decode`: a topic written in a format with declared
//! columns reads back through `decode` with the same declarations.

use super::columns::{ColumnSpec, Shape};
use apache_avro::Schema as AvroSchema;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_buffer::Buffer;
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

/// How rows become message values.
#[derive(Debug, Clone)]
pub enum EncodeFormat {
    /// The single fixed-size-list column's elements, raw little-endian.
    Tensor,
    /// One JSON object per row.
    Json,
    /// Avro binary with `schema`; with `schema_id`, in the Confluent wire format.
    Avro {
        schema: AvroSchema,
        schema_id: Option<u32>,
    },
    /// One JSON object per row in the Confluent wire format of JSON Schema (magic byte 0 and
    /// the schema's registry id before each object).
    JsonSchema { schema_id: u32 },
    /// Protobuf `message`; with `schema_id`, in the Confluent wire format (with the message's
    /// indexes in its file).
    Protobuf {
        message: prost_reflect::MessageDescriptor,
        schema_id: Option<u32>,
    },
    /// The `value` column's bytes as they are.
    Raw,
}

/// Encoded values of a batch: row `i` is `data[ranges[i]]`, or no value (a tombstone) where
/// `present[i]` is false. `data` is an Arrow buffer, so a tensor column's values and the JSON
/// writer's output are sent from where they are, without another copy.
#[derive(Debug, Default)]
pub struct EncodedRows {
    pub(in crate::format) data: Buffer,
    pub(in crate::format) ranges: Vec<(usize, usize)>,
    pub(in crate::format) present: Option<Vec<bool>>,
}

impl EncodedRows {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn row(&self, i: usize) -> Option<&[u8]> {
        if self.present.as_ref().is_some_and(|p| !p[i]) {
            return None;
        }
        let (start, end) = self.ranges[i];
        Some(&self.data.as_slice()[start..end])
    }

    /// Rows of `row_bytes` each, one after another in `data`.
    pub fn fixed_width(data: Buffer, row_bytes: usize) -> Self {
        let ranges = (0..data.len() / row_bytes)
            .map(|i| (i * row_bytes, (i + 1) * row_bytes))
            .collect();
        EncodedRows {
            data,
            ranges,
            present: None,
        }
    }

    /// The same rows, each behind the Confluent header (magic byte 0, `schema_id` big-endian).
    pub fn framed(&self, schema_id: u32) -> EncodedRows {
        let mut out = RowsBuilder::default();
        let mut row = Vec::new();
        for i in 0..self.len() {
            row.clear();
            row.push(crate::registry::WIRE_MAGIC);
            row.extend_from_slice(&schema_id.to_be_bytes());
            row.extend_from_slice(self.row(i).unwrap_or_default());
            out.push(&row);
        }
        out.finish(self.present.clone())
    }

    /// The first row longer than `limit` bytes, with its length.
    pub fn first_longer_than(&self, limit: usize) -> Option<(usize, usize)> {
        (0..self.len())
            .map(|i| (i, self.row(i).map_or(0, <[u8]>::len)))
            .find(|(_, n)| *n > limit)
    }
}

/// Appends rows one by one (Avro, raw, keys).
#[derive(Default)]
pub(in crate::format) struct RowsBuilder {
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl RowsBuilder {
    pub(in crate::format) fn push(&mut self, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.ranges.push((start, self.data.len()));
    }

    /// Appends one row, written in place by `write` (nothing is kept if it fails).
    pub(in crate::format) fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.data.len();
        if let Err(e) = write(&mut self.data) {
            self.data.truncate(start);
            return Err(e);
        }
        self.ranges.push((start, self.data.len()));
        Ok(())
    }

    /// Room for `rows` rows as long on average as those written so far (a send's rows are
    /// mostly alike): the buffer then grows once rather than doubling its way up.
    pub(in crate::format) fn reserve_like_so_far(&mut self, rows: usize) {
        if let Some(mean) = self.data.len().checked_div(self.ranges.len()) {
            self.data.reserve(rows * (mean + mean / 8 + 1));
            self.ranges.reserve(rows);
        }
    }

    pub(in crate::format) fn finish(self, present: Option<Vec<bool>>) -> EncodedRows {
        EncodedRows {
            data: Buffer::from_vec(self.data),
            ranges: self.ranges,
            present,
        }
    }
}

/// Rows written before a planned encoder sizes its buffer for the rest.
pub(in crate::format) const SAMPLE_ROWS: usize = 64;

pub(in crate::format) fn column_error(name: &str, row: usize, what: impl std::fmt::Display) -> String {
    format!("column '{name}' row {row}: {what}")
}

/// Checks `batch` against declared columns (the declarations `KafkaDataset(format="json")`
/// takes) and casts it to them: every declared column present, no null in a non-nullable one,
/// integers only where integers are declared (no NaN, no fractions), list rows of the declared
/// length, values in range. The result has exactly the declared columns, in order.
pub fn conform(batch: &RecordBatch, columns: &[ColumnSpec]) -> Result<RecordBatch, String> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for spec in columns {
        let array = batch.column_by_name(&spec.name).ok_or_else(|| {
            let have: Vec<&str> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            format!(
                "column '{}' is declared but missing (columns: {have:?})",
                spec.name
            )
        })?;
        if !spec.nullable && array.null_count() > 0 {
            let row = (0..array.len()).find(|i| array.is_null(*i)).unwrap_or(0);
            return Err(column_error(
                &spec.name,
                row,
                "null in a column that is not nullable",
            ));
        }
        let target = spec.field();
        let elements = match (array.data_type(), spec.shape) {
            (DataType::FixedSizeList(_, width), Shape::Fixed(n)) if *width as usize != n => {
                return Err(format!(
                    "column '{}' has {width} elements per row, declared {n}",
                    spec.name
                ));
            }
            (DataType::List(_), Shape::Fixed(n)) => {
                let list = array.as_list::<i32>();
                let offsets = list.value_offsets();
                if let Some(row) = (0..list.len()).find(|i| (offsets[i + 1] - offsets[*i]) as usize != n) {
                    let got = offsets[row + 1] - offsets[row];
                    return Err(column_error(
                        &spec.name,
                        row,
                        format!("{got} elements, declared {n} (ragged rows)"),
                    ));
                }
                Some(list.values().clone())
            }
            (DataType::FixedSizeList(_, _) | DataType::List(_), _) if spec.shape == Shape::Scalar => {
                return Err(format!(
                    "column '{}' holds lists but is declared a scalar {}",
                    spec.name,
                    spec.ty.name()
                ));
            }
            (DataType::FixedSizeList(_, _), _) => Some(array.as_fixed_size_list().values().clone()),
            (DataType::List(_), _) => Some(array.as_list::<i32>().values().clone()),
            (_, Shape::Fixed(_) | Shape::Variable) => {
                return Err(format!(
                    "column '{}' is declared a list but holds {}",
                    spec.name,
                    array.data_type()
                ));
            }
            _ => None,
        };
        if spec.ty.is_integer() {
            check_integral(&spec.name, elements.as_ref().unwrap_or(array), spec.shape)?;
        }
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let cast = cast_with_options(array, target.data_type(), &options).map_err(|e| {
            format!(
                "column '{}' cannot be stored as {}: {e}",
                spec.name,
                target.data_type()
            )
        })?;
        fields.push(target);
        arrays.push(cast);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
        .map_err(|e| e.to_string())
}

/// Floats bound for an integer column must be whole numbers (NaN is not).
fn check_integral(name: &str, values: &ArrayRef, shape: Shape) -> Result<(), String> {
    let width = match shape {
        Shape::Fixed(n) => n,
        _ => 1,
    };
    let bad = |i: usize, v: f64| {
        let what = if v.is_nan() {
            "NaN cannot be stored as an integer".to_string()
        } else {
            format!("{v} is not an integer")
        };
        column_error(name, i / width, what)
    };
    let check = |vals: &mut dyn Iterator<Item = (usize, f64)>| -> Result<(), String> {
        for (i, v) in vals {
            if !v.is_finite() || v.fract() != 0.0 {
                return Err(bad(i, v));
            }
        }
        Ok(())
    };
    match values.data_type() {
        DataType::Float32 => {
            let a = values.as_primitive::<Float32Type>();
            check(
                &mut a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (i, f64::from(v)))),
            )
        }
        DataType::Float64 => {
            let a = values.as_primitive::<Float64Type>();
            check(&mut a.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))))
        }
        _ => Ok(()),
    }
}

/// Encodes every row of `batch`.
pub fn encode(batch: &RecordBatch, format: &EncodeFormat) -> Result<EncodedRows, String> {
    match format {
        EncodeFormat::Tensor => super::tensor::encode(batch),
        EncodeFormat::Json => super::json::encode(batch, false),
        EncodeFormat::JsonSchema { schema_id } => Ok(super::json::encode(batch, true)?.framed(*schema_id)),
        EncodeFormat::Avro { schema, schema_id } => super::avro::encode(batch, schema, *schema_id),
        EncodeFormat::Protobuf { message, schema_id } => {
            super::protobuf::encode_protobuf(batch, message, *schema_id)
        }
        EncodeFormat::Raw => super::raw::encode(batch),
    }
}

/// A key per row from a column: bytes and strings as they are, integers as decimal text.
pub fn keys_from_column(batch: &RecordBatch, name: &str) -> Result<EncodedRows, String> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| format!("key column '{name}' is missing"))?;
    let as_text = match column.data_type() {
        DataType::Binary | DataType::Utf8 => column.clone(),
        dt if dt.is_integer() => {
            cast_with_options(column, &DataType::Utf8, &CastOptions::default()).map_err(|e| e.to_string())?
        }
        other => {
            return Err(format!(
                "key column '{name}' must hold bytes, strings or integers, got {other}"
            ))
        }
    };
    let key_batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "value",
            as_text.data_type().clone(),
            true,
        )])),
        vec![as_text],
    )
    .map_err(|e| e.to_string())?;
    super::raw::encode(&key_batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Float64Array;

    fn batch(id: Vec<f64>) -> RecordBatch {
        RecordBatch::try_from_iter([("id", Arc::new(Float64Array::from(id)) as ArrayRef)]).unwrap()
    }

    #[test]
    fn conform_checks_integers_and_nulls() {
        let spec = vec![ColumnSpec::parse("id", "int64").unwrap()];
        let ok = conform(&batch(vec![1.0, 2.0]), &spec).unwrap();
        assert_eq!(ok.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert_eq!(
            conform(&batch(vec![1.0, f64::NAN]), &spec).unwrap_err(),
            "column 'id' row 1: NaN cannot be stored as an integer"
        );
        assert!(conform(&batch(vec![1.5]), &spec)
            .unwrap_err()
            .contains("1.5 is not an integer"));
        let missing = vec![ColumnSpec::parse("x", "float32").unwrap()];
        assert!(conform(&batch(vec![1.0]), &missing)
            .unwrap_err()
            .contains("'x' is declared but missing"));
    }
}
