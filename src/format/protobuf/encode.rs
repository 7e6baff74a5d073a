//! `protobuf`: Arrow rows → Protobuf messages, the inverse of the decoder's mapping
//! (`columns`): lists → `repeated`, structs → nested messages, maps → map fields, strings →
//! enums by value name (integers by number), timestamps → `google.protobuf.Timestamp`, scalars
//! → the `google.protobuf.*Value` wrappers. A column is matched to the field of its name; fields
//! without a column stay unset, columns without a field are not sent.

use super::write_plan as plan;

use super::{message_indexes, wrapped, write_message_indexes};
use crate::format::encode::{column_error, EncodedRows, RowsBuilder};
use crate::registry::WIRE_MAGIC;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use std::collections::HashMap;

/// Encodes every row of `batch` as `message`; with `schema_id`, in the Confluent wire format
/// (magic byte, id, the message's indexes in its file).
pub fn encode_protobuf(
    batch: &RecordBatch,
    message: &MessageDescriptor,
    schema_id: Option<u32>,
) -> Result<EncodedRows, String> {
    let schema = batch.schema();
    let columns: Vec<(&str, &ArrayRef, FieldDescriptor)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter_map(|(f, c)| {
            let field = message.get_field_by_name(f.name())?;
            Some((f.name().as_str(), c, field))
        })
        .collect();
    if columns.is_empty() && batch.num_columns() > 0 {
        let fields: Vec<String> = message.fields().map(|f| f.name().to_owned()).collect();
        return Err(format!(
            "no column names a field of {} (fields: {fields:?})",
            message.full_name()
        ));
    }
    let mut header = Vec::new();
    if let Some(id) = schema_id {
        header.push(WIRE_MAGIC);
        header.extend_from_slice(&id.to_be_bytes());
        write_message_indexes(&mut header, &message_indexes(message));
    }
    let named = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .zip(batch.columns())
    };
    if let Some(plan) = plan::MessagePlan::compile(message, named()) {
        if let Ok(rows) = encode_planned(&plan, &header, batch.num_rows()) {
            return Ok(rows);
        }
        // A row the plan cannot write: the general path says which and why.
    }
    encode_general(message, &columns, &header, batch.num_rows())
}

/// Every row by the compiled plan, or the first row it cannot write.
fn encode_planned(
    plan: &plan::MessagePlan,
    header: &[u8],
    rows: usize,
) -> Result<EncodedRows, plan::Unplanned> {
    let mut out = RowsBuilder::default();
    for row in 0..rows {
        if row == crate::format::encode::SAMPLE_ROWS {
            out.reserve_like_so_far(rows - row);
        }
        out.push_with(|data| {
            data.extend_from_slice(header);
            plan.write(row, data)
        })?;
    }
    Ok(out.finish(None))
}

/// Every row through a `DynamicMessage`: any shape the decoder's mapping allows, with errors
/// that name the column and row.
fn encode_general(
    message: &MessageDescriptor,
    columns: &[(&str, &ArrayRef, FieldDescriptor)],
    header: &[u8],
    rows: usize,
) -> Result<EncodedRows, String> {
    let mut out = RowsBuilder::default();
    let mut value = Vec::new();
    for row in 0..rows {
        let mut m = DynamicMessage::new(message.clone());
        for (name, column, field) in columns {
            if let Some(v) = field_value(field, column, row).map_err(|e| column_error(name, row, e))? {
                m.set_field(field, v);
            }
        }
        value.clear();
        value.extend_from_slice(header);
        m.encode(&mut value)
            .map_err(|e| format!("row {row}: cannot encode {}: {e}", message.full_name()))?;
        out.push(&value);
    }
    Ok(out.finish(None))
}

/// The value of `field` from `array[row]`; `None` leaves the field unset.
fn field_value(field: &FieldDescriptor, array: &ArrayRef, row: usize) -> Result<Option<Value>, String> {
    if array.is_null(row) {
        if field.is_list() || field.is_map() || field.supports_presence() {
            return Ok(None);
        }
        return Err(format!(
            "null, but field '{}' has no presence (declare it `optional` in the .proto)",
            field.name()
        ));
    }
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else {
            unreachable!("map fields are entries")
        };
        let DataType::Map(_, _) = array.data_type() else {
            return Err(format!(
                "a map field needs a map column, got {}",
                array.data_type()
            ));
        };
        let entries = array.as_map().value(row);
        let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        let mut map = HashMap::new();
        for i in 0..entries.len() {
            if entries.column(0).is_null(i) {
                return Err("a map key is null".into());
            }
            let key = element(&key_field.kind(), entries.column(0), i)?;
            let key = map_key(key).ok_or("a map key of this type is not allowed")?;
            let value = if entries.column(1).is_null(i) {
                Value::default_value(&value_field.kind())
            } else {
                element(&value_field.kind(), entries.column(1), i)?
            };
            map.insert(key, value);
        }
        return Ok(Some(Value::Map(map)));
    }
    if field.is_list() {
        let items = match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().value(row),
            DataType::LargeList(_) => array.as_list::<i64>().value(row),
            DataType::FixedSizeList(_, _) => array.as_fixed_size_list().value(row),
            other => return Err(format!("a repeated field needs a list column, got {other}")),
        };
        let values = (0..items.len())
            .map(|i| {
                if items.is_null(i) {
                    Err(format!(
                        "list element {i} is null (repeated fields hold no nulls)"
                    ))
                } else {
                    element(&kind, &items, i)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(Value::List(values)));
    }
    element(&kind, array, row).map(Some)
}

fn map_key(v: Value) -> Option<MapKey> {
    Some(match v {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(i) => MapKey::I32(i),
        Value::I64(i) => MapKey::I64(i),
        Value::U32(i) => MapKey::U32(i),
        Value::U64(i) => MapKey::U64(i),
        Value::String(s) => MapKey::String(s),
        _ => return None,
    })
}

/// An integer cell, whatever its Arrow integer type (whole floats too).
fn integer(array: &ArrayRef, row: usize) -> Option<i128> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 | DataType::Float64 => {
            let f = float(array, row)?;
            if !f.is_finite() || f.fract() != 0.0 || f.abs() > 1.9e19 {
                return None;
            }
            f as i128
        }
        _ => return None,
    })
}

fn float(array: &ArrayRef, row: usize) -> Option<f64> {
    Some(match array.data_type() {
        DataType::Float16 => array.as_primitive::<Float16Type>().value(row).to_f64(),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(row).into(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row),
        t if t.is_integer() => integer(array, row)? as f64,
        _ => return None,
    })
}

fn text(array: &ArrayRef, row: usize) -> Option<&str> {
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row),
        DataType::Utf8View => array.as_string_view().value(row),
        _ => return None,
    })
}

/// A non-null cell as one (not repeated) value of `kind`.
fn element(kind: &Kind, array: &ArrayRef, row: usize) -> Result<Value, String> {
    let dt = array.data_type();
    let cannot = || format!("{dt} cannot be written as {}", describe(kind));
    let int = |lo: i128, hi: i128| -> Result<i128, String> {
        let v = integer(array, row).ok_or_else(|| {
            if dt.is_floating() {
                format!("{} is not an integer", float(array, row).unwrap_or(f64::NAN))
            } else {
                cannot()
            }
        })?;
        if v < lo || v > hi {
            return Err(format!("{v} is out of range for {}", describe(kind)));
        }
        Ok(v)
    };
    Ok(match kind {
        Kind::Bool => match dt {
            DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
            _ => return Err(cannot()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(int(i32::MIN.into(), i32::MAX.into())? as i32)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(int(i64::MIN.into(), i64::MAX.into())? as i64)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(int(0, u32::MAX.into())? as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(int(0, u64::MAX.into())? as u64),
        Kind::Float => Value::F32(float(array, row).ok_or_else(cannot)? as f32),
        Kind::Double => Value::F64(float(array, row).ok_or_else(cannot)?),
        Kind::String => Value::String(text(array, row).ok_or_else(cannot)?.to_owned()),
        Kind::Bytes => Value::Bytes(match dt {
            DataType::Binary => array.as_binary::<i32>().value(row).to_vec().into(),
            DataType::LargeBinary => array.as_binary::<i64>().value(row).to_vec().into(),
            DataType::BinaryView => array.as_binary_view().value(row).to_vec().into(),
            DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().value(row).to_vec().into(),
            _ => return Err(cannot()),
        }),
        Kind::Enum(e) => {
            if let Some(name) = text(array, row) {
                let v = e.get_value_by_name(name).ok_or_else(|| {
                    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    format!("'{name}' is not a value of enum {} ({names:?})", e.full_name())
                })?;
                Value::EnumNumber(v.number())
            } else {
                let n = int(i32::MIN.into(), i32::MAX.into())? as i32;
                if e.get_value(n).is_none() {
                    return Err(format!("{n} is not a value of enum {}", e.full_name()));
                }
                Value::EnumNumber(n)
            }
        }
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            let DataType::Timestamp(unit, _) = dt else {
                return Err(cannot());
            };
            let (v, per_second): (i64, i64) = match unit {
                TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().value(row), 1),
                TimeUnit::Millisecond => (array.as_primitive::<TimestampMillisecondType>().value(row), 1_000),
                TimeUnit::Microsecond => (
                    array.as_primitive::<TimestampMicrosecondType>().value(row),
                    1_000_000,
                ),
                TimeUnit::Nanosecond => (
                    array.as_primitive::<TimestampNanosecondType>().value(row),
                    1_000_000_000,
                ),
            };
            let (seconds, rest) = (v.div_euclid(per_second), v.rem_euclid(per_second));
            let nanos = rest * (1_000_000_000 / per_second);
            let mut t = DynamicMessage::new(m.clone());
            t.set_field_by_number(1, Value::I64(seconds));
            t.set_field_by_number(2, Value::I32(nanos as i32));
            Value::Message(t)
        }
        Kind::Message(m) => {
            if let DataType::Struct(fields) = dt {
                let s = array.as_struct();
                let mut out = DynamicMessage::new(m.clone());
                for (f, child) in fields.iter().zip(s.columns()) {
                    let Some(field) = m.get_field_by_name(f.name()) else {
                        continue;
                    };
                    if let Some(v) =
                        field_value(&field, child, row).map_err(|e| format!("{}: {e}", f.name()))?
                    {
                        out.set_field(&field, v);
                    }
                }
                Value::Message(out)
            } else if let Some(value) = wrapped(m) {
                let mut out = DynamicMessage::new(m.clone());
                out.set_field(&value, element(&value.kind(), array, row)?);
                Value::Message(out)
            } else {
                return Err(cannot());
            }
        }
    })
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests;
