//! Encoders: Arrow record batches → one Kafka message value per row, written in Rust with no
//! Python object per row. The mirror of `decode`: a topic written in a format with declared
//! columns reads back through `decode` with the same declarations.

mod protobuf;
pub use protobuf::registration as protobuf_registration;

use crate::schema::{ColumnSpec, Shape};

mod avro;
use apache_avro::types::Value as AvroValue;
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
    data: Buffer,
    ranges: Vec<(usize, usize)>,
    present: Option<Vec<bool>>,
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
struct RowsBuilder {
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl RowsBuilder {
    fn push(&mut self, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.ranges.push((start, self.data.len()));
    }

    /// Appends one row, written in place by `write` (nothing is kept if it fails).
    fn push_with<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
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
    fn reserve_like_so_far(&mut self, rows: usize) {
        if let Some(mean) = self.data.len().checked_div(self.ranges.len()) {
            self.data.reserve(rows * (mean + mean / 8 + 1));
            self.ranges.reserve(rows);
        }
    }

    fn finish(self, present: Option<Vec<bool>>) -> EncodedRows {
        EncodedRows {
            data: Buffer::from_vec(self.data),
            ranges: self.ranges,
            present,
        }
    }
}

/// Rows written before a planned encoder sizes its buffer for the rest.
const SAMPLE_ROWS: usize = 64;

fn column_error(name: &str, row: usize, what: impl std::fmt::Display) -> String {
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
        EncodeFormat::Tensor => encode_tensor(batch),
        EncodeFormat::Json => encode_json(batch, false),
        EncodeFormat::JsonSchema { schema_id } => Ok(encode_json(batch, true)?.framed(*schema_id)),
        EncodeFormat::Avro { schema, schema_id } => encode_avro(batch, schema, *schema_id),
        EncodeFormat::Protobuf { message, schema_id } => {
            protobuf::encode_protobuf(batch, message, *schema_id)
        }
        EncodeFormat::Raw => encode_raw(batch),
    }
}

fn encode_tensor(batch: &RecordBatch) -> Result<EncodedRows, String> {
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
fn encode_json(batch: &RecordBatch, explicit_nulls: bool) -> Result<EncodedRows, String> {
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

fn encode_raw(batch: &RecordBatch) -> Result<EncodedRows, String> {
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

fn encode_avro(
    batch: &RecordBatch,
    schema: &AvroSchema,
    schema_id: Option<u32>,
) -> Result<EncodedRows, String> {
    let AvroSchema::Record(record) = schema else {
        return Err("the Avro schema must be a record".into());
    };
    let columns: Vec<(&str, &ArrayRef)> = record
        .fields
        .iter()
        .map(|f| {
            batch
                .column_by_name(&f.name)
                .map(|c| (f.name.as_str(), c))
                .ok_or_else(|| format!("Avro field '{}' has no column", f.name))
        })
        .collect::<Result<_, _>>()?;
    let mut out = RowsBuilder::default();
    let mut framed = Vec::new();
    let header = |framed: &mut Vec<u8>| {
        framed.clear();
        if let Some(id) = schema_id {
            framed.push(crate::registry::WIRE_MAGIC);
            framed.extend_from_slice(&id.to_be_bytes());
        }
    };
    if let Some(plan) = avro::WritePlan::compile(batch, schema) {
        header(&mut framed);
        for row in 0..batch.num_rows() {
            if row == SAMPLE_ROWS {
                out.reserve_like_so_far(batch.num_rows() - row);
            }
            let written: Result<(), std::convert::Infallible> = out.push_with(|data| {
                data.extend_from_slice(&framed);
                plan.write_row(row, data);
                Ok(())
            });
            let Ok(()) = written;
        }
        return Ok(out.finish(None));
    }
    for row in 0..batch.num_rows() {
        let fields = columns
            .iter()
            .zip(&record.fields)
            .map(|((name, column), field)| {
                avro_value(column, row, &field.schema)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| column_error(name, row, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let datum = apache_avro::to_avro_datum(schema, AvroValue::Record(fields))
            .map_err(|e| format!("row {row} does not match the Avro schema: {e}"))?;
        match schema_id {
            Some(id) => {
                framed.clear();
                framed.push(0);
                framed.extend_from_slice(&id.to_be_bytes());
                framed.extend_from_slice(&datum);
                out.push(&framed);
            }
            None => out.push(&datum),
        }
    }
    Ok(out.finish(None))
}

/// One Arrow cell as an Avro value for a field of `schema` (a `["null", T]` union wraps it).
fn avro_value(column: &ArrayRef, row: usize, schema: &AvroSchema) -> Result<AvroValue, String> {
    if let AvroSchema::Union(u) = schema {
        let null_at = u.variants().iter().position(|s| matches!(s, AvroSchema::Null));
        let (idx, inner) = u
            .variants()
            .iter()
            .enumerate()
            .find(|(_, s)| !matches!(s, AvroSchema::Null))
            .ok_or("a union of only null")?;
        return Ok(if column.is_null(row) {
            AvroValue::Union(
                null_at.ok_or("null in a field whose union has no null")? as u32,
                Box::new(AvroValue::Null),
            )
        } else {
            AvroValue::Union(idx as u32, Box::new(avro_value(column, row, inner)?))
        });
    }
    if column.is_null(row) {
        return Err("null in a field that is not nullable".into());
    }
    let items = |values: ArrayRef, item_schema: &AvroSchema| -> Result<AvroValue, String> {
        (0..values.len())
            .map(|i| avro_value(&values, i, item_schema))
            .collect::<Result<Vec<_>, _>>()
            .map(AvroValue::Array)
    };
    Ok(match (column.data_type(), schema) {
        (DataType::FixedSizeList(_, _), AvroSchema::Array(a)) => {
            items(column.as_fixed_size_list().value(row), &a.items)?
        }
        (DataType::List(_), AvroSchema::Array(a)) => items(column.as_list::<i32>().value(row), &a.items)?,
        // A nested record from a struct column: each record field from the struct field of its name.
        (DataType::Struct(_), AvroSchema::Record(r)) => {
            let s = column.as_struct();
            AvroValue::Record(
                r.fields
                    .iter()
                    .map(|f| {
                        let child = s
                            .column_by_name(&f.name)
                            .ok_or_else(|| format!("the struct has no field '{}'", f.name))?;
                        avro_value(child, row, &f.schema)
                            .map(|v| (f.name.clone(), v))
                            .map_err(|e| format!("field '{}': {e}", f.name))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        (DataType::Boolean, _) => AvroValue::Boolean(column.as_boolean().value(row)),
        (DataType::Utf8, _) => AvroValue::String(column.as_string::<i32>().value(row).to_string()),
        (DataType::LargeUtf8, _) => AvroValue::String(column.as_string::<i64>().value(row).to_string()),
        (DataType::Binary, _) => AvroValue::Bytes(column.as_binary::<i32>().value(row).to_vec()),
        (DataType::Float32, AvroSchema::Double) => {
            AvroValue::Double(f64::from(column.as_primitive::<Float32Type>().value(row)))
        }
        (DataType::Float32, _) => AvroValue::Float(column.as_primitive::<Float32Type>().value(row)),
        (DataType::Float64, AvroSchema::Float) => {
            AvroValue::Float(column.as_primitive::<Float64Type>().value(row) as f32)
        }
        (DataType::Float64, _) => AvroValue::Double(column.as_primitive::<Float64Type>().value(row)),
        (dt, AvroSchema::Double) if dt.is_integer() => AvroValue::Double(integer(column, row)? as f64),
        (dt, AvroSchema::Float) if dt.is_integer() => AvroValue::Float(integer(column, row)? as f32),
        (dt, AvroSchema::Int) if dt.is_integer() => AvroValue::Int(
            i32::try_from(integer(column, row)?)
                .map_err(|_| "value out of range for Avro int".to_string())?,
        ),
        (dt, _) if dt.is_integer() => AvroValue::Long(integer(column, row)?),
        (dt, s) => return Err(format!("{dt} cannot be written as Avro {s:?}")),
    })
}

fn integer(column: &ArrayRef, row: usize) -> Result<i64, String> {
    let as_i64 = cast_with_options(
        &column.slice(row, 1),
        &DataType::Int64,
        &CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(as_i64.as_primitive::<Int64Type>().value(0))
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
    encode_raw(&key_batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, JsonDecoder};
    use arrow_array::{Float64Array, Int64Array};

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
        assert!(encode(&batch(vec![f64::INFINITY]), &EncodeFormat::Json)
            .unwrap_err()
            .contains("no JSON representation"));
    }

    /// Struct columns are written as nested records (and lists of structs as arrays of records),
    /// and read back by the Avro decoder into the same columns.
    #[test]
    fn struct_columns_write_nested_avro_records() {
        use crate::decode::AvroDecoder;
        use arrow_array::{Int32Array, ListArray, StringArray, StructArray};
        use arrow_buffer::{NullBuffer, OffsetBuffer};
        use arrow_schema::Fields;
        let schema_text = r#"{"type": "record", "name": "r", "fields": [
            {"name": "id", "type": "long"},
            {"name": "meta", "type": ["null", {"type": "record", "name": "Meta", "fields": [
                {"name": "source", "type": "string"},
                {"name": "at", "type": {"type": "record", "name": "At", "fields": [
                    {"name": "lat", "type": "double"}]}}]}]},
            {"name": "boxes", "type": {"type": "array", "items": {"type": "record", "name": "Box",
                "fields": [{"name": "w", "type": "int"}]}}}]}"#;
        let schema = AvroSchema::parse_str(schema_text).unwrap();
        let at_fields = Fields::from(vec![Field::new("lat", DataType::Float64, false)]);
        let at = StructArray::new(
            at_fields.clone(),
            vec![Arc::new(Float64Array::from(vec![0.5, 0.0, 2.5]))],
            None,
        );
        let meta_fields = Fields::from(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("at", DataType::Struct(at_fields), false),
            Field::new("ignored", DataType::Int32, true),
        ]);
        let meta = StructArray::new(
            meta_fields,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(at),
                Arc::new(Int32Array::from(vec![None, None, Some(1)])),
            ],
            Some(NullBuffer::from(vec![true, false, true])),
        );
        let box_fields = Fields::from(vec![Field::new("w", DataType::Int32, false)]);
        let boxes = ListArray::new(
            Arc::new(Field::new("item", DataType::Struct(box_fields.clone()), false)),
            OffsetBuffer::from_lengths([2, 0, 1]),
            Arc::new(StructArray::new(
                box_fields,
                vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
                None,
            )),
            None,
        );
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![7, 8, 9])) as ArrayRef),
            ("meta", Arc::new(meta) as ArrayRef),
            ("boxes", Arc::new(boxes) as ArrayRef),
        ])
        .unwrap();
        // The compiled writer gives apache-avro's bytes.
        let plan = avro::WritePlan::compile(&batch, &schema).expect("a plan for nested records");
        let AvroSchema::Record(record) = &schema else {
            unreachable!()
        };
        for row in 0..batch.num_rows() {
            let mut fast = Vec::new();
            plan.write_row(row, &mut fast);
            let fields = record
                .fields
                .iter()
                .map(|f| {
                    let column = batch.column_by_name(&f.name).unwrap();
                    (f.name.clone(), avro_value(column, row, &f.schema).unwrap())
                })
                .collect();
            let general = apache_avro::to_avro_datum(&schema, AvroValue::Record(fields)).unwrap();
            assert_eq!(fast, general, "row {row}");
        }
        let rows = encode(
            &batch,
            &EncodeFormat::Avro {
                schema: schema.clone(),
                schema_id: None,
            },
        )
        .unwrap();
        let mut d = AvroDecoder::new(schema_text, &[], &[], None).unwrap();
        for i in 0..3 {
            d.decode(None, rows.row(i)).unwrap();
        }
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[7, 8, 9]);
        let meta = cols[1].as_struct();
        assert_eq!(
            (meta.is_valid(0), meta.is_null(1), meta.is_valid(2)),
            (true, true, true)
        );
        assert_eq!(meta.column(0).as_string::<i32>().value(2), "c");
        let lat = meta
            .column(1)
            .as_struct()
            .column(0)
            .as_primitive::<Float64Type>()
            .clone();
        assert_eq!((lat.value(0), lat.value(2)), (0.5, 2.5));
        let boxes = cols[2].as_list::<i32>();
        assert_eq!(boxes.value_offsets(), &[0, 2, 2, 3]);
        assert_eq!(
            boxes
                .values()
                .as_struct()
                .column(0)
                .as_primitive::<Int32Type>()
                .values(),
            &[1, 2, 3]
        );
        // A record field the struct lacks names the column, the row and the field.
        let bad =
            AvroSchema::parse_str(&schema_text.replace(r#""name": "lat""#, r#""name": "lon""#)).unwrap();
        let err = encode(
            &batch,
            &EncodeFormat::Avro {
                schema: bad,
                schema_id: None,
            },
        )
        .unwrap_err();
        assert!(
            err.contains("column 'meta' row 0: field 'at': the struct has no field 'lon'"),
            "{err}"
        );
        // A null inside a struct that is not null, in a field that is not nullable: the general
        // path names it. (Nulls under a null struct are never written.)
        let meta = batch.column(1).as_struct();
        let source = Arc::new(StringArray::from(vec![Some("a"), None, None])) as ArrayRef;
        let mut children = meta.columns().to_vec();
        children[0] = source;
        let mut fields = meta
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>();
        fields[0] = fields[0].clone().with_nullable(true);
        let meta = StructArray::new(Fields::from(fields), children, meta.nulls().cloned());
        let shown = RecordBatch::try_from_iter([
            ("id", batch.column(0).clone()),
            ("meta", Arc::new(meta) as ArrayRef),
            ("boxes", batch.column(2).clone()),
        ])
        .unwrap();
        assert!(avro::WritePlan::compile(&shown, &schema).is_none());
        let err = encode(
            &shown,
            &EncodeFormat::Avro {
                schema,
                schema_id: None,
            },
        )
        .unwrap_err();
        assert!(
            err.contains("column 'meta' row 2: field 'source': null in a field that is not nullable"),
            "{err}"
        );
    }

    /// The compiled Avro writer gives byte for byte what apache-avro writes from values.
    #[test]
    fn avro_plans_write_like_apache_avro() {
        use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Int64Builder, ListBuilder};
        use arrow_array::{BinaryArray, BooleanArray, Float32Array, Int32Array, StringArray};
        let schema = AvroSchema::parse_str(
            r#"{"type": "record", "name": "r", "fields": [
                {"name": "id", "type": "long"},
                {"name": "small", "type": "int"},
                {"name": "f", "type": "float"},
                {"name": "d", "type": "double"},
                {"name": "wide", "type": "double"},
                {"name": "ok", "type": "boolean"},
                {"name": "tag", "type": ["null", "string"]},
                {"name": "late", "type": ["long", "null"]},
                {"name": "blob", "type": "bytes"},
                {"name": "x", "type": {"type": "array", "items": "float"}},
                {"name": "ids", "type": {"type": "array", "items": "long"}}]}"#,
        )
        .unwrap();
        let n = 300;
        let mut x = FixedSizeListBuilder::new(Float32Builder::new(), 3);
        let mut ids = ListBuilder::new(Int64Builder::new());
        for i in 0..n {
            x.values().append_slice(&[i as f32, -0.5, 1e-3 * i as f32]);
            x.append(true);
            for k in 0..(i % 4) {
                ids.values().append_value(k * 1_000_000_007 - i);
            }
            ids.append(true);
        }
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 7919 - 1_000_000))) as ArrayRef,
            ),
            (
                "small",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i - 150))) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 / 3.0))) as ArrayRef,
            ),
            (
                "d",
                Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32 * 0.25))) as ArrayRef,
            ),
            (
                "wide",
                Arc::new(Int32Array::from_iter_values(0..n as i32)) as ArrayRef,
            ),
            (
                "ok",
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0)))) as ArrayRef,
            ),
            (
                "tag",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then(|| format!("t{i}é"))),
                )) as ArrayRef,
            ),
            (
                "late",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 2 == 0).then_some(i << 40)),
                )) as ArrayRef,
            ),
            (
                "blob",
                Arc::new(BinaryArray::from_iter_values(
                    (0..n).map(|i| vec![i as u8; (i % 3) as usize]),
                )) as ArrayRef,
            ),
            ("x", Arc::new(x.finish()) as ArrayRef),
            ("ids", Arc::new(ids.finish()) as ArrayRef),
        ])
        .unwrap();
        let plan = avro::WritePlan::compile(&batch, &schema).expect("a plan for flat records");
        let AvroSchema::Record(record) = &schema else {
            unreachable!()
        };
        for row in 0..batch.num_rows() {
            let mut fast = Vec::new();
            plan.write_row(row, &mut fast);
            let fields = record
                .fields
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        avro_value(batch.column_by_name(&f.name).unwrap(), row, &f.schema).unwrap(),
                    )
                })
                .collect();
            let general = apache_avro::to_avro_datum(&schema, AvroValue::Record(fields)).unwrap();
            assert_eq!(fast, general, "row {row}");
        }
        // A value out of range keeps the general path, which names column and row.
        let too_big =
            RecordBatch::try_from_iter([("small", Arc::new(Int64Array::from(vec![1, 1 << 40])) as ArrayRef)])
                .unwrap();
        let int_schema = AvroSchema::parse_str(
            r#"{"type": "record", "name": "r", "fields": [{"name": "small", "type": "int"}]}"#,
        )
        .unwrap();
        assert!(avro::WritePlan::compile(&too_big, &int_schema).is_none());
        let err = encode(
            &too_big,
            &EncodeFormat::Avro {
                schema: int_schema,
                schema_id: None,
            },
        )
        .unwrap_err();
        assert!(err.contains("column 'small' row 1"), "{err}");
    }
}
