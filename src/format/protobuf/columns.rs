//! Reader columns: the Arrow column each field of the reader message becomes (scalars →
//! primitives, `repeated` → lists, messages → structs, maps → Arrow maps, enums → names,
//! `google.protobuf.Timestamp` → nanosecond UTC timestamps, wrappers → nullable scalars).

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use std::sync::Arc;

pub(super) const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// A wrapper message's scalar (`google.protobuf.Int64Value` → int64).
pub(crate) fn wrapped(message: &MessageDescriptor) -> Option<FieldDescriptor> {
    match message.full_name() {
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => message.get_field_by_name("value"),
        _ => None,
    }
}

/// The element type of a reader column.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ty {
    Bool,
    I32,
    I64,
    U32,
    U64,
    F32,
    F64,
    /// Strings and enum value names.
    Utf8,
    Binary,
    /// Nanoseconds since the epoch, UTC.
    Timestamp,
    Struct(Vec<Node>),
    Map(Box<Node>, Box<Node>),
}

/// One reader column (or struct child, map key or value).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) ty: Ty,
    /// `repeated`: a list of `ty`.
    pub(super) list: bool,
    pub(super) nullable: bool,
}

pub(super) fn scalar_ty(kind: &Kind) -> Option<Ty> {
    Some(match kind {
        Kind::Bool => Ty::Bool,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Ty::I32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Ty::I64,
        Kind::Uint32 | Kind::Fixed32 => Ty::U32,
        Kind::Uint64 | Kind::Fixed64 => Ty::U64,
        Kind::Float => Ty::F32,
        Kind::Double => Ty::F64,
        Kind::String | Kind::Enum(_) => Ty::Utf8,
        Kind::Bytes => Ty::Binary,
        Kind::Message(_) => return None,
    })
}

fn kind_ty(kind: &Kind, path: &str, all_nullable: bool, seen: &mut Vec<String>) -> Result<Ty, String> {
    if let Some(t) = scalar_ty(kind) {
        return Ok(t);
    }
    let Kind::Message(m) = kind else {
        unreachable!("scalars are handled above")
    };
    if m.full_name() == TIMESTAMP {
        return Ok(Ty::Timestamp);
    }
    if let Some(value) = wrapped(m) {
        return Ok(scalar_ty(&value.kind()).expect("wrappers hold scalars"));
    }
    if seen.iter().any(|s| s == m.full_name()) {
        return Err(format!(
            "field '{path}': message {} contains itself (recursive messages have no column type)",
            m.full_name()
        ));
    }
    seen.push(m.full_name().to_owned());
    let children = message_nodes(m, path, all_nullable, seen)?;
    seen.pop();
    Ok(Ty::Struct(children))
}

pub(super) fn message_nodes(
    message: &MessageDescriptor,
    prefix: &str,
    all_nullable: bool,
    seen: &mut Vec<String>,
) -> Result<Vec<Node>, String> {
    message
        .fields()
        .map(|f| {
            let path = if prefix.is_empty() {
                f.name().to_owned()
            } else {
                format!("{prefix}.{}", f.name())
            };
            let ty = if f.is_map() {
                let Kind::Message(entry) = f.kind() else {
                    unreachable!("map fields are entries")
                };
                let key = entry.map_entry_key_field();
                let value = entry.map_entry_value_field();
                let value_ty = kind_ty(&value.kind(), &path, all_nullable, seen)?;
                let value_nullable = matches!(value.kind(), Kind::Message(_));
                Ty::Map(
                    Box::new(Node {
                        name: "key".into(),
                        ty: scalar_ty(&key.kind()).expect("map keys are scalars"),
                        list: false,
                        nullable: false,
                    }),
                    Box::new(Node {
                        name: "value".into(),
                        ty: value_ty,
                        list: false,
                        nullable: value_nullable,
                    }),
                )
            } else {
                kind_ty(&f.kind(), &path, all_nullable, seen)?
            };
            let wrapper = matches!(f.kind(), Kind::Message(m) if wrapped(&m).is_some());
            Ok(Node {
                name: f.name().to_owned(),
                ty,
                list: f.is_list(),
                nullable: all_nullable || (f.supports_presence() && !f.is_list()) || wrapper,
            })
        })
        .collect()
}

impl Node {
    pub(super) fn data_type(&self) -> DataType {
        let element = match &self.ty {
            Ty::Bool => DataType::Boolean,
            Ty::I32 => DataType::Int32,
            Ty::I64 => DataType::Int64,
            Ty::U32 => DataType::UInt32,
            Ty::U64 => DataType::UInt64,
            Ty::F32 => DataType::Float32,
            Ty::F64 => DataType::Float64,
            Ty::Utf8 => DataType::Utf8,
            Ty::Binary => DataType::Binary,
            Ty::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            Ty::Struct(children) => DataType::Struct(children.iter().map(Node::field).collect()),
            Ty::Map(key, value) => DataType::Map(Arc::new(map_entries(key, value)), false),
        };
        if self.list {
            DataType::List(Arc::new(Field::new("item", element, false)))
        } else {
            element
        }
    }

    pub(super) fn field(&self) -> Field {
        Field::new(&self.name, self.data_type(), self.nullable)
    }
}

pub(super) fn map_entries(key: &Node, value: &Node) -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![key.field(), value.field()])),
        false,
    )
}
