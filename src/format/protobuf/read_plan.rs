//! Writer → reader plans: for each reader column, the writer field of the same name and how its
//! values convert; and the general path that appends a decoded `DynamicMessage` by the plan.

use super::columns::{scalar_ty, wrapped, Node, Ty, TIMESTAMP};
use super::storage::{offset, Col, Data};
use prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};

/// How a writer field's value becomes a reader column's element.
#[derive(Debug)]
pub(super) enum Conv {
    Scalar,
    Enum(EnumDescriptor),
    Timestamp,
    /// A wrapper message: its `value` field.
    Wrapper(FieldDescriptor),
    Message(Plan),
    Map {
        key: Box<Conv>,
        value: Box<Conv>,
    },
}

/// For each reader column of a message, the writer field of the same name (if any).
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) slots: Vec<Option<(FieldDescriptor, Conv)>>,
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn scalar_fits(writer: &Ty, reader: &Ty) -> bool {
    use Ty::*;
    writer == reader
        || matches!(
            (writer, reader),
            (I32, I64) | (U32, U64) | (U32, I64) | (F32, F64)
        )
}

fn conv(kind: &Kind, reader: &Ty, path: &str) -> Result<Conv, String> {
    let mismatch = || {
        format!(
            "field '{path}': the writer's {} cannot be read as the reader's column type",
            describe(kind)
        )
    };
    match (kind, reader) {
        (Kind::Message(m), Ty::Timestamp) if m.full_name() == TIMESTAMP => Ok(Conv::Timestamp),
        (Kind::Message(m), Ty::Struct(children)) if m.full_name() != TIMESTAMP && wrapped(m).is_none() => {
            Ok(Conv::Message(plan(m, children, path)?))
        }
        (Kind::Message(m), reader) => match wrapped(m) {
            Some(value) if scalar_ty(&value.kind()).is_some_and(|w| scalar_fits(&w, reader)) => {
                Ok(Conv::Wrapper(value))
            }
            _ => Err(mismatch()),
        },
        (Kind::Enum(e), Ty::Utf8) => Ok(Conv::Enum(e.clone())),
        (kind, reader) => match scalar_ty(kind) {
            Some(w) if scalar_fits(&w, reader) => Ok(Conv::Scalar),
            _ => Err(mismatch()),
        },
    }
}

pub(super) fn plan(writer: &MessageDescriptor, reader: &[Node], prefix: &str) -> Result<Plan, String> {
    let slots = reader
        .iter()
        .map(|node| {
            let path = if prefix.is_empty() {
                node.name.clone()
            } else {
                format!("{prefix}.{}", node.name)
            };
            let Some(field) = writer.get_field_by_name(&node.name) else {
                return Ok(None);
            };
            let c = match &node.ty {
                Ty::Map(key, value) => {
                    let Kind::Message(entry) = field.kind() else {
                        return Err(format!("field '{path}': a map in the reader, not in the writer"));
                    };
                    if !field.is_map() {
                        return Err(format!("field '{path}': a map in the reader, not in the writer"));
                    }
                    Conv::Map {
                        key: Box::new(conv(&entry.map_entry_key_field().kind(), &key.ty, &path)?),
                        value: Box::new(conv(&entry.map_entry_value_field().kind(), &value.ty, &path)?),
                    }
                }
                _ if field.is_map() => {
                    return Err(format!("field '{path}': a map in the writer, not in the reader"));
                }
                ty => {
                    if field.is_list() != node.list {
                        return Err(format!(
                            "field '{path}': repeated in one of the writer and reader schemas only"
                        ));
                    }
                    conv(&field.kind(), ty, &path)?
                }
            };
            Ok(Some((field, c)))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Plan { slots })
}

// ---------------------------------------------------------------------------------------------
// Appending decoded messages

pub(super) fn push_scalar(col: &mut Col, value: &Value, conv: &Conv) -> Result<(), String> {
    match (&mut col.data, value) {
        (Data::Bool(v), Value::Bool(b)) => v.push(*b),
        (Data::I32(v), Value::I32(x)) => v.push(*x),
        (Data::I64(v), Value::I64(x)) => v.push(*x),
        (Data::I64(v), Value::I32(x)) => v.push(i64::from(*x)),
        (Data::I64(v), Value::U32(x)) => v.push(i64::from(*x)),
        (Data::U32(v), Value::U32(x)) => v.push(*x),
        (Data::U64(v), Value::U64(x)) => v.push(*x),
        (Data::U64(v), Value::U32(x)) => v.push(u64::from(*x)),
        (Data::F32(v), Value::F32(x)) => v.push(*x),
        (Data::F64(v), Value::F64(x)) => v.push(*x),
        (Data::F64(v), Value::F32(x)) => v.push(f64::from(*x)),
        (Data::Utf8 { offsets, bytes }, Value::String(s)) => {
            bytes.extend_from_slice(s.as_bytes());
            offsets.push(offset(bytes.len())?);
        }
        (Data::Utf8 { offsets, bytes }, Value::EnumNumber(n)) => {
            // An open (proto3) enum may carry a number its schema does not name: kept as digits.
            match conv {
                Conv::Enum(e) => match e.get_value(*n) {
                    Some(v) => bytes.extend_from_slice(v.name().as_bytes()),
                    None => bytes.extend_from_slice(n.to_string().as_bytes()),
                },
                _ => bytes.extend_from_slice(n.to_string().as_bytes()),
            }
            offsets.push(offset(bytes.len())?);
        }
        (Data::Binary { offsets, bytes }, Value::Bytes(b)) => {
            bytes.extend_from_slice(b);
            offsets.push(offset(bytes.len())?);
        }
        (_, other) => return Err(format!("unexpected value {other:?}")),
    }
    col.valid();
    Ok(())
}

/// Appends one element (not a list) of a present field of type `ty`, named `name`.
fn push_value(col: &mut Col, ty: &Ty, name: &str, value: &Value, conv: &Conv) -> Result<(), String> {
    match (conv, value) {
        (Conv::Timestamp, Value::Message(m)) => {
            let seconds = m.get_field_by_number(1).and_then(|v| v.as_i64()).unwrap_or(0);
            let nanos = m.get_field_by_number(2).and_then(|v| v.as_i32()).unwrap_or(0);
            let ns = seconds
                .checked_mul(1_000_000_000)
                .and_then(|s| s.checked_add(i64::from(nanos)))
                .ok_or_else(|| {
                    format!(
                        "field '{name}': timestamp {seconds} s is out of the nanosecond range (years 1677-2262)"
                    )
                })?;
            match &mut col.data {
                Data::Timestamp(v) => v.push(ns),
                _ => unreachable!("timestamp conversions fill timestamp columns"),
            }
            col.valid();
            Ok(())
        }
        (Conv::Wrapper(field), Value::Message(m)) => push_scalar(col, &m.get_field(field), &Conv::Scalar),
        (Conv::Message(plan), Value::Message(m)) => {
            let Ty::Struct(children) = ty else {
                unreachable!("message conversions fill struct columns")
            };
            let Data::Struct { children: cols, len } = &mut col.data else {
                unreachable!("struct nodes have struct storage")
            };
            append_fields(cols, children, plan, m)?;
            *len += 1;
            col.valid();
            Ok(())
        }
        (
            Conv::Map {
                key,
                value: value_conv,
            },
            Value::Map(map),
        ) => {
            let Ty::Map(key_node, value_node) = ty else {
                unreachable!("map conversions fill map columns")
            };
            let Data::List { offsets, item } = &mut col.data else {
                unreachable!("maps are stored as lists of entries")
            };
            let Data::Struct { children, len } = &mut item.data else {
                unreachable!("map entries are structs")
            };
            // Sorted by key: a map's wire order means nothing, and a batch should not depend
            // on a hash seed.
            let mut entries: Vec<(&MapKey, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                let k: Value = k.clone().into();
                push_value(&mut children[0], &key_node.ty, name, &k, key)?;
                push_value(&mut children[1], &value_node.ty, name, v, value_conv)?;
                *len += 1;
            }
            offsets.push(offset(item_len(children))?);
            col.valid();
            Ok(())
        }
        (Conv::Scalar | Conv::Enum(_), v) => push_scalar(col, v, conv),
        (_, other) => Err(format!("field '{name}': unexpected value {other:?}")),
    }
}

fn item_len(children: &[Col]) -> usize {
    children.first().map_or(0, Col::len)
}

/// Appends the fields of `message` to the columns of a message (top level or a struct).
pub(super) fn append_fields(
    cols: &mut [Col],
    nodes: &[Node],
    plan: &Plan,
    message: &DynamicMessage,
) -> Result<(), String> {
    for ((col, node), slot) in cols.iter_mut().zip(nodes).zip(&plan.slots) {
        let Some((field, conv)) = slot else {
            col.push_null()?;
            continue;
        };
        if node.list {
            let value = message.get_field(field);
            let Value::List(items) = value.as_ref() else {
                return Err(format!("field '{}': expected a list", node.name));
            };
            let Data::List { offsets, item } = &mut col.data else {
                unreachable!("list nodes have list storage")
            };
            for v in items {
                push_value(item, &node.ty, &node.name, v, conv)?;
            }
            offsets.push(offset(item.len())?);
            col.valid();
        } else if field.supports_presence() && !message.has_field(field) {
            col.push_null()?;
        } else {
            push_value(col, &node.ty, &node.name, &message.get_field(field), conv)?;
        }
    }
    Ok(())
}
