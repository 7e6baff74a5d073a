//! Arrow rows → Avro datums by a plan compiled once per send: each record field bound to its
//! column, cast once to the Arrow type its Avro type is written from, then every row written in
//! one pass with no value tree per row. Float and double arrays are copied as they lie (Avro and
//! Arrow are both little-endian).
//!
//! Plans cover records of primitives, logical types over them, `["null", T]` unions, arrays of
//! numbers, and records and arrays of records nested in them (from struct and list-of-struct
//! columns). Anything else — and any column a cast cannot convert whole (a value out of
//! range, a null in a non-nullable field) — keeps the general path (`encode.rs` beside this file),
//! which names the column and row of what is wrong.

use apache_avro::Schema as AvroSchema;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BooleanArray, GenericListArray, PrimitiveArray, RecordBatch, StringArray, StructArray,
};
use arrow_buffer::{NullBuffer, ToByteSlice};
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field};
use std::sync::Arc;

pub(super) struct WritePlan {
    fields: Vec<FieldWriter>,
}

struct FieldWriter {
    /// The branch index of null, for a `["null", T]` union field.
    null_index: Option<i64>,
    column: Column,
}

enum Column {
    Int(PrimitiveArray<Int32Type>),
    Long(PrimitiveArray<Int64Type>),
    Float(PrimitiveArray<Float32Type>),
    Double(PrimitiveArray<Float64Type>),
    Bool(BooleanArray),
    Str(StringArray),
    Bytes(arrow_array::BinaryArray),
    FloatList(GenericListArray<i32>),
    DoubleList(GenericListArray<i32>),
    IntList(GenericListArray<i32>),
    LongList(GenericListArray<i32>),
    /// A nested record: the writers of its fields, bound to the struct's children (row for row).
    Record(StructArray, Vec<FieldWriter>),
    /// An array of records: the writers of the items' fields, bound to the list's whole values.
    RecordList(GenericListArray<i32>, Vec<FieldWriter>),
}

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow_cast::display::FormatOptions::new(),
};

impl WritePlan {
    /// The plan for `batch` under the record `schema`, or `None` where the general path writes.
    pub(super) fn compile(batch: &RecordBatch, schema: &AvroSchema) -> Option<WritePlan> {
        let AvroSchema::Record(record) = schema else {
            return None;
        };
        let fields = compile_fields(record, |name| batch.column_by_name(name), None)?;
        Some(WritePlan { fields })
    }

    /// Appends row `row`'s datum to `out`.
    pub(super) fn write_row(&self, row: usize, out: &mut Vec<u8>) {
        Self::write_fields(&self.fields, row, out);
    }

    fn write_fields(fields: &[FieldWriter], row: usize, out: &mut Vec<u8>) {
        for f in fields {
            let null = match &f.column {
                Column::Int(a) => a.is_null(row),
                Column::Long(a) => a.is_null(row),
                Column::Float(a) => a.is_null(row),
                Column::Double(a) => a.is_null(row),
                Column::Bool(a) => a.is_null(row),
                Column::Str(a) => a.is_null(row),
                Column::Bytes(a) => a.is_null(row),
                Column::FloatList(a)
                | Column::DoubleList(a)
                | Column::IntList(a)
                | Column::LongList(a)
                | Column::RecordList(a, _) => a.is_null(row),
                Column::Record(a, _) => a.is_null(row),
            };
            if let Some(null_index) = f.null_index {
                if null {
                    long(out, null_index);
                    continue;
                }
                long(out, 1 - null_index);
            }
            match &f.column {
                Column::Int(a) => long(out, i64::from(a.value(row))),
                Column::Long(a) => long(out, a.value(row)),
                Column::Float(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Column::Double(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
                Column::Bool(a) => out.push(u8::from(a.value(row))),
                Column::Str(a) => sized(out, a.value(row).as_bytes()),
                Column::Bytes(a) => sized(out, a.value(row)),
                // Native byte order is little-endian on every supported target (see format::tensor).
                Column::FloatList(a) => items(out, a, row, 4, |v, out| {
                    out.extend_from_slice(v.as_primitive::<Float32Type>().values().to_byte_slice())
                }),
                Column::DoubleList(a) => items(out, a, row, 8, |v, out| {
                    out.extend_from_slice(v.as_primitive::<Float64Type>().values().to_byte_slice())
                }),
                Column::IntList(a) => items(out, a, row, 0, |v, out| {
                    v.as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .for_each(|x| long(out, i64::from(*x)))
                }),
                Column::LongList(a) => items(out, a, row, 0, |v, out| {
                    v.as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .for_each(|x| long(out, *x))
                }),
                Column::Record(_, fields) => Self::write_fields(fields, row, out),
                Column::RecordList(a, fields) => {
                    let offsets = a.value_offsets();
                    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                    if end > start {
                        long(out, (end - start) as i64);
                        for item in start..end {
                            Self::write_fields(fields, item, out);
                        }
                    }
                    out.push(0);
                }
            }
        }
    }
}

/// The writers of `record`'s fields, each bound to the column `column` names. `hidden`: the rows
/// where an enclosing struct is null, which are never written (a child may hold nulls there).
fn compile_fields<'a>(
    record: &apache_avro::schema::RecordSchema,
    column: impl Fn(&str) -> Option<&'a ArrayRef>,
    hidden: Option<&NullBuffer>,
) -> Option<Vec<FieldWriter>> {
    let mut fields = Vec::with_capacity(record.fields.len());
    for f in &record.fields {
        let column = column(&f.name)?;
        let (inner, null_index) = match &f.schema {
            AvroSchema::Union(u) => match u.variants() {
                [AvroSchema::Null, t] => (t, Some(0)),
                [t, AvroSchema::Null] => (t, Some(1)),
                _ => return None,
            },
            s => (s, None),
        };
        if null_index.is_none() {
            if let Some(nulls) = column.logical_nulls().filter(|n| n.null_count() > 0) {
                let all_hidden =
                    hidden.is_some_and(|h| (0..nulls.len()).all(|i| nulls.is_valid(i) || h.is_null(i)));
                if !all_hidden {
                    return None; // the general path names the row
                }
            }
        }
        fields.push(FieldWriter {
            null_index,
            column: bind(column, inner, hidden)?,
        });
    }
    Some(fields)
}

/// Casts `column` to the Arrow type the Avro type `schema` is written from. `hidden`: the rows
/// an enclosing null struct hides.
fn bind(column: &ArrayRef, schema: &AvroSchema, hidden: Option<&NullBuffer>) -> Option<Column> {
    let to = |dt: DataType| cast_with_options(column, &dt, &STRICT).ok();
    let numeric = column.data_type().is_numeric();
    Some(match schema {
        AvroSchema::Record(r) if matches!(column.data_type(), DataType::Struct(_)) => {
            let s = column.as_struct();
            let hidden = NullBuffer::union(hidden, s.nulls());
            let fields = compile_fields(r, |name| s.column_by_name(name), hidden.as_ref())?;
            Column::Record(s.clone(), fields)
        }
        AvroSchema::Array(a) if matches!(a.items.as_ref(), AvroSchema::Record(_)) => {
            let AvroSchema::Record(r) = a.items.as_ref() else {
                unreachable!("matched above")
            };
            let DataType::List(item) = column.data_type() else {
                return None;
            };
            if !matches!(item.data_type(), DataType::Struct(_)) {
                return None;
            }
            let list = column.as_list::<i32>();
            let values = list.values().as_struct();
            if values.null_count() > 0 {
                return None;
            }
            let fields = compile_fields(r, |name| values.column_by_name(name), None)?;
            Column::RecordList(list.clone(), fields)
        }
        AvroSchema::Int | AvroSchema::Date | AvroSchema::TimeMillis if column.data_type().is_integer() => {
            Column::Int(to(DataType::Int32)?.as_primitive::<Int32Type>().clone())
        }
        AvroSchema::Long
        | AvroSchema::TimeMicros
        | AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos
            if column.data_type().is_integer() =>
        {
            Column::Long(to(DataType::Int64)?.as_primitive::<Int64Type>().clone())
        }
        AvroSchema::Float if numeric => {
            Column::Float(to(DataType::Float32)?.as_primitive::<Float32Type>().clone())
        }
        AvroSchema::Double if numeric => {
            Column::Double(to(DataType::Float64)?.as_primitive::<Float64Type>().clone())
        }
        AvroSchema::Boolean if column.data_type() == &DataType::Boolean => {
            Column::Bool(column.as_boolean().clone())
        }
        AvroSchema::String | AvroSchema::Uuid
            if matches!(
                column.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            Column::Str(to(DataType::Utf8)?.as_string::<i32>().clone())
        }
        AvroSchema::Bytes
            if matches!(
                column.data_type(),
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView
            ) =>
        {
            Column::Bytes(to(DataType::Binary)?.as_binary::<i32>().clone())
        }
        AvroSchema::Array(a) => {
            let item_numeric = match column.data_type() {
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                    f.data_type().is_numeric()
                }
                _ => false,
            };
            if !item_numeric {
                return None;
            }
            let (item, wrap): (DataType, fn(GenericListArray<i32>) -> Column) = match a.items.as_ref() {
                AvroSchema::Float => (DataType::Float32, Column::FloatList),
                AvroSchema::Double => (DataType::Float64, Column::DoubleList),
                AvroSchema::Int => (DataType::Int32, Column::IntList),
                AvroSchema::Long => (DataType::Int64, Column::LongList),
                _ => return None,
            };
            let list = to(DataType::List(Arc::new(Field::new("item", item, true))))?;
            let list = list.as_list::<i32>().clone();
            if list.values().null_count() > 0 {
                return None;
            }
            wrap(list)
        }
        _ => return None,
    })
}

/// One array value: a block of its items (if any), then the end-of-array zero. `width` > 0:
/// the items are written as their bytes are (floats, doubles).
fn items(
    out: &mut Vec<u8>,
    list: &GenericListArray<i32>,
    row: usize,
    width: usize,
    write: impl Fn(&ArrayRef, &mut Vec<u8>),
) {
    let values = list.value(row);
    if !values.is_empty() {
        long(out, values.len() as i64);
        if width > 0 {
            out.reserve(values.len() * width);
        }
        write(&values, out);
    }
    out.push(0);
}

#[inline]
fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn sized(out: &mut Vec<u8>, bytes: &[u8]) {
    long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}
