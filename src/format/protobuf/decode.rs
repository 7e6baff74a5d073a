//! `protobuf`: Protobuf messages, plain or in the Confluent Schema Registry wire format.
//!
//! The schema side (compiling .proto text with `protox`, descriptor sets, a registry's schemas
//! with their references, the Confluent message indexes) is shared with the producer's encoder.
//!
//! Columns follow the reader message: scalars → primitive columns, `repeated` → lists, nested
//! messages → structs, maps → Arrow maps, enums → their value names, `google.protobuf.Timestamp`
//! → nanosecond UTC timestamps, the `google.protobuf.*Value` wrappers → nullable scalars.
//! Fields with presence (proto3 `optional`, messages, oneof members) are nullable; with a
//! registry every column is, because a writer schema may lack any field. Writer fields are matched
//! to the reader's columns by name (a plan per writer); values are read by the writer's compiled
//! reader (`wire`), or decoded into a `DynamicMessage` where it gives a value up.

use crate::error::Error;
use crate::format::{require_value, Decoder};
use crate::registry::{RegisteredSchema, SchemaFailure, SchemaRegistry, SchemaType, WIRE_HEADER, WIRE_MAGIC};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, ListArray, MapArray, PrimitiveArray, StringArray, StructArray,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields, TimeUnit};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MapKey,
    MessageDescriptor, Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

#[path = "wire.rs"]
mod wire;

// ---------------------------------------------------------------------------------------------
// Schemas

/// Where a user's Protobuf schema comes from.
#[derive(Debug, Clone)]
pub enum ProtoSource {
    /// `.proto` text; it may import the google/protobuf well-known types.
    Text(String),
    /// A `.proto` file; its imports resolve next to it (and to the well-known types).
    File(PathBuf),
    /// A serialized `FileDescriptorSet` (`protoc --include_imports --descriptor_set_out`).
    DescriptorSet(Vec<u8>),
}

/// The name `.proto` text given inline is compiled under.
const INLINE_NAME: &str = "kafka_ml_inline.proto";

/// Files by import name (a registry's references, inline text), then the well-known types.
struct NamedFiles(HashMap<String, File>);

impl FileResolver for NamedFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| protox::Error::file_not_found(name))
    }
}

fn compile_named(files: HashMap<String, File>, main: &str) -> Result<FileDescriptor, String> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(NamedFiles(files));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(main)
        .map_err(|e| format!("invalid Protobuf schema: {e}"))?;
    compiler
        .descriptor_pool()
        .get_file_by_name(main)
        .ok_or_else(|| format!("invalid Protobuf schema: '{main}' is not in the compiled files"))
}

/// The message `message` (a full name, or a name unique in the main file) of `source`; `None`:
/// the first message of the main file (the inline text, the file, or a descriptor set's last
/// file, which is the one `protoc` was asked for).
pub fn load_message(source: &ProtoSource, message: Option<&str>) -> Result<MessageDescriptor, String> {
    let main = match source {
        ProtoSource::Text(text) => {
            let file = File::from_source(INLINE_NAME, text).map_err(|e| format!("invalid .proto: {e}"))?;
            compile_named(HashMap::from([(INLINE_NAME.to_owned(), file)]), INLINE_NAME)?
        }
        ProtoSource::File(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = dir.map_or_else(|| PathBuf::from("."), PathBuf::from);
            let name = path
                .file_name()
                .ok_or_else(|| format!("proto_file '{}' is not a file", path.display()))?;
            let mut compiler =
                protox::Compiler::new([&dir]).map_err(|e| format!("proto_file '{}': {e}", path.display()))?;
            compiler
                .open_file(name)
                .map_err(|e| format!("proto_file '{}': {e}", path.display()))?;
            let name = name.to_string_lossy();
            compiler
                .descriptor_pool()
                .get_file_by_name(&name)
                .ok_or_else(|| format!("proto_file '{}': not in the compiled files", path.display()))?
        }
        ProtoSource::DescriptorSet(bytes) => {
            let pool = DescriptorPool::decode(bytes.as_slice())
                .map_err(|e| format!("invalid descriptor set: {e}"))?;
            let last = pool.files().last().ok_or("the descriptor set holds no file")?;
            if let Some(name) = message {
                return pool
                    .get_message_by_name(name.trim_start_matches('.'))
                    .ok_or_else(|| format!("message '{name}' is not in the descriptor set"));
            }
            last
        }
    };
    find_message(&main, message)
}

/// `name` in `file`'s pool (a full name, or a name unique among `file`'s messages), or the
/// file's first message.
pub fn find_message(file: &FileDescriptor, name: Option<&str>) -> Result<MessageDescriptor, String> {
    let Some(name) = name.map(|n| n.trim_start_matches('.')) else {
        return file
            .messages()
            .next()
            .ok_or_else(|| format!("'{}' defines no message", file.name()));
    };
    if let Some(m) = file.parent_pool().get_message_by_name(name) {
        return Ok(m);
    }
    let mut all = Vec::new();
    let mut stack: Vec<MessageDescriptor> = file.messages().collect();
    while let Some(m) = stack.pop() {
        stack.extend(m.child_messages());
        all.push(m);
    }
    let matching: Vec<&MessageDescriptor> = all
        .iter()
        .filter(|m| m.name() == name || m.full_name().ends_with(&format!(".{name}")))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let mut names: Vec<&str> = all.iter().map(|m| m.full_name()).collect();
            names.sort();
            Err(format!(
                "message '{name}' is not in the schema (messages: {names:?})"
            ))
        }
        _ => Err(format!("message name '{name}' is ambiguous: give the full name")),
    }
}

/// A registry schema: `.proto` text (Confluent's and Apicurio's answer) or a base64
/// `FileDescriptorProto` (what Confluent's Python serializer registers).
fn registered_file(name: &str, text: &str) -> Result<File, String> {
    match File::from_source(name, text) {
        Ok(f) => Ok(f),
        Err(parse_error) => {
            use base64::Engine;
            let proto = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).ok())
                .filter(|f| f.name.is_some() || !f.message_type.is_empty());
            match proto {
                Some(mut proto) => {
                    proto.name = Some(name.to_owned());
                    Ok(File::from_file_descriptor_proto(proto))
                }
                None => Err(format!("invalid .proto: {parse_error}")),
            }
        }
    }
}

/// Compiles a registered Protobuf schema, with the schemas its imports name (references, by
/// subject and version, fetched depth-first; the well-known types come with `protox`).
pub(crate) fn compile_registered(
    registry: &SchemaRegistry,
    schema: &RegisteredSchema,
) -> Result<FileDescriptor, SchemaFailure> {
    if schema.schema_type != SchemaType::Protobuf {
        return Err(SchemaFailure::Bad(format!(
            "it is a {} schema, not Protobuf",
            schema.schema_type.name()
        )));
    }
    let mut files = HashMap::new();
    let mut pending = schema.references.clone();
    while let Some(reference) = pending.pop() {
        if files.contains_key(&reference.name) {
            continue;
        }
        let found = registry.referenced(&reference)?;
        let file = registered_file(&reference.name, &found.schema)
            .map_err(|e| SchemaFailure::Bad(format!("reference '{}': {e}", reference.name)))?;
        files.insert(reference.name.clone(), file);
        pending.extend(found.references);
    }
    let main = format!("kafka_ml_registry_schema_{}.proto", schema.id);
    files.insert(
        main.clone(),
        registered_file(&main, &schema.schema).map_err(SchemaFailure::Bad)?,
    );
    compile_named(files, &main).map_err(SchemaFailure::Bad)
}

/// The reader message of a read that has a registry but no schema of its own: `message` (or
/// the first) of the subject's latest version.
pub fn subject_message(
    registry: &SchemaRegistry,
    subject: &str,
    message: Option<&str>,
) -> crate::error::Result<MessageDescriptor> {
    let latest = registry.subject_version(subject, None)?;
    let file = compile_registered(registry, &latest).map_err(|e| match e {
        SchemaFailure::Bad(e) => Error::Config(format!("the latest schema of subject '{subject}': {e}")),
        SchemaFailure::Unavailable(e) => e,
    })?;
    find_message(&file, message).map_err(|e| Error::Config(format!("subject '{subject}': {e}")))
}

/// The Confluent message indexes of `message`: its position among its file's top-level
/// messages, then among each enclosing message's nested ones.
pub fn message_indexes(message: &MessageDescriptor) -> Vec<i32> {
    let mut path = Vec::new();
    let mut current = message.clone();
    loop {
        match current.parent_message() {
            Some(parent) => {
                let i = parent.child_messages().position(|m| m == current).unwrap_or(0);
                path.push(i as i32);
                current = parent;
            }
            None => {
                let i = current
                    .parent_file()
                    .messages()
                    .position(|m| m == current)
                    .unwrap_or(0);
                path.push(i as i32);
                break;
            }
        }
    }
    path.reverse();
    path
}

/// The message at `indexes` in `file`.
pub fn message_at(file: &FileDescriptor, indexes: &[i32]) -> Result<MessageDescriptor, String> {
    let bad = || format!("message indexes {indexes:?} name no message of the schema");
    let (first, rest) = indexes.split_first().ok_or_else(bad)?;
    let mut message = file
        .messages()
        .nth(usize::try_from(*first).map_err(|_| bad())?)
        .ok_or_else(bad)?;
    for i in rest {
        let next = message
            .child_messages()
            .nth(usize::try_from(*i).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        message = next;
    }
    Ok(message)
}

fn zigzag_varint(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends the message-index array (`[0]` as the single byte 0, Confluent's shorthand).
pub fn write_message_indexes(out: &mut Vec<u8>, indexes: &[i32]) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    zigzag_varint(out, indexes.len() as i64);
    for i in indexes {
        zigzag_varint(out, i64::from(*i));
    }
}

fn read_zigzag(buf: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or("the message indexes end before their last varint")?;
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
        }
    }
    Err("a message index varint is longer than 10 bytes".into())
}

/// Reads the message-index array after the 5-byte header: the indexes (`[0]` for the
/// shorthand) and the bytes they took.
pub fn read_message_indexes(buf: &[u8]) -> Result<(Vec<i32>, usize), String> {
    let mut pos = 0;
    let count = read_zigzag(buf, &mut pos)?;
    if count == 0 {
        return Ok((vec![0], pos));
    }
    // Each index takes at least a byte: a count beyond what is left is not an index array.
    if count < 0 || count as usize > buf.len() - pos {
        return Err(format!("invalid message index count {count}"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = read_zigzag(buf, &mut pos)?;
        indexes.push(
            i32::try_from(i)
                .ok()
                .filter(|i| *i >= 0)
                .ok_or_else(|| format!("invalid message index {i}"))?,
        );
    }
    Ok((indexes, pos))
}

// ---------------------------------------------------------------------------------------------
// Reader columns

const TIMESTAMP: &str = "google.protobuf.Timestamp";

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
enum Ty {
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
struct Node {
    name: String,
    ty: Ty,
    /// `repeated`: a list of `ty`.
    list: bool,
    nullable: bool,
}

fn scalar_ty(kind: &Kind) -> Option<Ty> {
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

fn message_nodes(
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
    fn data_type(&self) -> DataType {
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

    fn field(&self) -> Field {
        Field::new(&self.name, self.data_type(), self.nullable)
    }
}

fn map_entries(key: &Node, value: &Node) -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![key.field(), value.field()])),
        false,
    )
}

// ---------------------------------------------------------------------------------------------
// Column storage: plain vectors, truncatable (a failed message leaves nothing behind)

#[derive(Debug)]
enum Data {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Utf8 {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Binary {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Timestamp(Vec<i64>),
    Struct {
        children: Vec<Col>,
        len: usize,
    },
    /// Lists and maps (whose item is the entry struct).
    List {
        offsets: Vec<i32>,
        item: Box<Col>,
    },
}

#[derive(Debug)]
struct Col {
    field: Field,
    /// Per-row validity, kept for nullable columns only.
    validity: Option<Vec<bool>>,
    data: Data,
}

fn offset(len: usize) -> Result<i32, String> {
    i32::try_from(len).map_err(|_| "batch exceeds 2 GiB in one column; lower batch_size".to_string())
}

impl Col {
    fn new(node: &Node) -> Col {
        let element = Col::element(node);
        let (data, field) = if node.list {
            let item = Col {
                field: Field::new("item", element.field.data_type().clone(), false),
                validity: None,
                data: element.data,
            };
            (
                Data::List {
                    offsets: vec![0],
                    item: Box::new(item),
                },
                node.field(),
            )
        } else {
            (element.data, node.field())
        };
        Col {
            validity: node.nullable.then(Vec::new),
            field,
            data,
        }
    }

    /// A column of `node`'s element type (ignoring `list`).
    fn element(node: &Node) -> Col {
        let bytes = || (vec![0], Vec::new());
        let data = match &node.ty {
            Ty::Bool => Data::Bool(Vec::new()),
            Ty::I32 => Data::I32(Vec::new()),
            Ty::I64 => Data::I64(Vec::new()),
            Ty::U32 => Data::U32(Vec::new()),
            Ty::U64 => Data::U64(Vec::new()),
            Ty::F32 => Data::F32(Vec::new()),
            Ty::F64 => Data::F64(Vec::new()),
            Ty::Utf8 => {
                let (offsets, bytes) = bytes();
                Data::Utf8 { offsets, bytes }
            }
            Ty::Binary => {
                let (offsets, bytes) = bytes();
                Data::Binary { offsets, bytes }
            }
            Ty::Timestamp => Data::Timestamp(Vec::new()),
            Ty::Struct(children) => Data::Struct {
                children: children.iter().map(Col::new).collect(),
                len: 0,
            },
            Ty::Map(key, value) => {
                let entries = map_entries(key, value);
                Data::List {
                    offsets: vec![0],
                    item: Box::new(Col {
                        field: entries,
                        validity: None,
                        data: Data::Struct {
                            children: vec![Col::new(key), Col::new(value)],
                            len: 0,
                        },
                    }),
                }
            }
        };
        let field = Field::new(
            &node.name,
            Node {
                list: false,
                ..node.clone()
            }
            .data_type(),
            node.nullable,
        );
        Col {
            field,
            validity: None,
            data,
        }
    }

    fn len(&self) -> usize {
        match &self.data {
            Data::Bool(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) | Data::Timestamp(v) => v.len(),
            Data::U32(v) => v.len(),
            Data::U64(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::Utf8 { offsets, .. } | Data::Binary { offsets, .. } | Data::List { offsets, .. } => {
                offsets.len() - 1
            }
            Data::Struct { len, .. } => *len,
        }
    }

    fn truncate(&mut self, rows: usize) {
        if let Some(v) = &mut self.validity {
            v.truncate(rows);
        }
        match &mut self.data {
            Data::Bool(v) => v.truncate(rows),
            Data::I32(v) => v.truncate(rows),
            Data::I64(v) | Data::Timestamp(v) => v.truncate(rows),
            Data::U32(v) => v.truncate(rows),
            Data::U64(v) => v.truncate(rows),
            Data::F32(v) => v.truncate(rows),
            Data::F64(v) => v.truncate(rows),
            Data::Utf8 { offsets, bytes } | Data::Binary { offsets, bytes } => {
                offsets.truncate(rows + 1);
                bytes.truncate(*offsets.last().unwrap_or(&0) as usize);
            }
            Data::Struct { children, len } => {
                *len = (*len).min(rows);
                for c in children {
                    c.truncate(rows);
                }
            }
            Data::List { offsets, item } => {
                offsets.truncate(rows + 1);
                item.truncate(*offsets.last().unwrap_or(&0) as usize);
            }
        }
    }

    /// Marks the row just pushed as valid.
    fn valid(&mut self) {
        if let Some(v) = &mut self.validity {
            v.push(true);
        }
    }

    /// Appends a zero row (the slot under a null, or a field the writer does not have in a
    /// column that is not nullable).
    fn push_default(&mut self) -> Result<(), String> {
        match &mut self.data {
            Data::Bool(v) => v.push(false),
            Data::I32(v) => v.push(0),
            Data::I64(v) | Data::Timestamp(v) => v.push(0),
            Data::U32(v) => v.push(0),
            Data::U64(v) => v.push(0),
            Data::F32(v) => v.push(0.0),
            Data::F64(v) => v.push(0.0),
            Data::Utf8 { offsets, bytes } | Data::Binary { offsets, bytes } => {
                offsets.push(offset(bytes.len())?)
            }
            Data::Struct { children, len } => {
                for c in children {
                    c.push_default()?;
                }
                *len += 1;
            }
            Data::List { offsets, .. } => offsets.push(*offsets.last().unwrap_or(&0)),
        }
        self.valid();
        Ok(())
    }

    fn push_null(&mut self) -> Result<(), String> {
        self.push_default()?;
        if let Some(v) = &mut self.validity {
            *v.last_mut().expect("a row was just pushed") = false;
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        let nulls = self
            .validity
            .as_mut()
            .map(|v| NullBuffer::from(std::mem::take(v)))
            .filter(|n| n.null_count() > 0);
        fn prim<T: arrow_array::ArrowPrimitiveType>(
            v: &mut Vec<T::Native>,
            nulls: Option<NullBuffer>,
        ) -> ArrayRef {
            Arc::new(PrimitiveArray::<T>::new(
                ScalarBuffer::from(std::mem::take(v)),
                nulls,
            ))
        }
        use arrow_array::types::*;
        match &mut self.data {
            Data::Bool(v) => Arc::new(BooleanArray::new(std::mem::take(v).into(), nulls)),
            Data::I32(v) => prim::<Int32Type>(v, nulls),
            Data::I64(v) => prim::<Int64Type>(v, nulls),
            Data::U32(v) => prim::<UInt32Type>(v, nulls),
            Data::U64(v) => prim::<UInt64Type>(v, nulls),
            Data::F32(v) => prim::<Float32Type>(v, nulls),
            Data::F64(v) => prim::<Float64Type>(v, nulls),
            Data::Timestamp(v) => Arc::new(
                PrimitiveArray::<TimestampNanosecondType>::new(ScalarBuffer::from(std::mem::take(v)), nulls)
                    .with_timezone("UTC"),
            ),
            Data::Utf8 { offsets, bytes } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let bytes = Buffer::from_vec(std::mem::take(bytes));
                // Strings come from `String`s (valid UTF-8), checked again here: a batch is built
                // once, so the check is cheap beside decoding.
                Arc::new(StringArray::new(offsets, bytes, nulls))
            }
            Data::Binary { offsets, bytes } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(BinaryArray::new(
                    offsets,
                    Buffer::from_vec(std::mem::take(bytes)),
                    nulls,
                ))
            }
            Data::Struct { children, len } => {
                let rows = std::mem::take(len);
                let DataType::Struct(fields) = self.field.data_type().clone() else {
                    unreachable!("struct columns have struct fields")
                };
                let arrays: Vec<ArrayRef> = children.iter_mut().map(Col::finish).collect();
                if arrays.is_empty() {
                    Arc::new(StructArray::new_empty_fields(rows, nulls))
                } else {
                    Arc::new(StructArray::new(fields, arrays, nulls))
                }
            }
            Data::List { offsets, item } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let values = item.finish();
                match self.field.data_type() {
                    DataType::Map(entries, sorted) => {
                        let entries_array = values
                            .as_any()
                            .downcast_ref::<StructArray>()
                            .expect("map entries are structs")
                            .clone();
                        Arc::new(MapArray::new(
                            entries.clone(),
                            offsets,
                            entries_array,
                            nulls,
                            *sorted,
                        ))
                    }
                    DataType::List(item_field) => {
                        Arc::new(ListArray::new(item_field.clone(), offsets, values, nulls))
                    }
                    other => unreachable!("list storage for {other}"),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer → reader plans

/// How a writer field's value becomes a reader column's element.
#[derive(Debug)]
enum Conv {
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
struct Plan {
    slots: Vec<Option<(FieldDescriptor, Conv)>>,
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

fn plan(writer: &MessageDescriptor, reader: &[Node], prefix: &str) -> Result<Plan, String> {
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

fn push_scalar(col: &mut Col, value: &Value, conv: &Conv) -> Result<(), String> {
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
fn append_fields(
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

// ---------------------------------------------------------------------------------------------
// The decoder

/// A writer's message and how it maps onto the reader's columns.
struct Writer {
    message: MessageDescriptor,
    plan: Plan,
    /// Its compiled reader (none for shapes it does not read, such as maps).
    wire: Option<wire::WirePlan>,
}

impl Writer {
    fn new(message: MessageDescriptor, plan: Plan, nodes: &[Node]) -> Arc<Writer> {
        let wire = wire::compile(&plan, nodes);
        Arc::new(Writer { message, plan, wire })
    }
}

pub struct ProtobufDecoder {
    nodes: Vec<Node>,
    columns: Vec<Col>,
    reader: MessageDescriptor,
    /// Values carry the Confluent header and message indexes; writer schemas come from here.
    registry: Option<Arc<SchemaRegistry>>,
    /// Plain values: written with the reader's message.
    plain: Option<Arc<Writer>>,
    /// Compiled writer schemas by id (or why the id cannot be used: fetched once).
    files: HashMap<u32, Result<FileDescriptor, String>>,
    /// Writers by (schema id, message indexes).
    writers: HashMap<(u32, Vec<i32>), Result<Arc<Writer>, String>>,
    /// The writer of the last value whose message indexes were the shorthand `[0]` (the first
    /// message: nearly every value), by schema id, so those skip the index parse and the lookup.
    last_first: Option<(u32, Arc<Writer>)>,
    unavailable: Option<Error>,
    rows: usize,
    /// Tests: decode every value with the general path (to compare with the compiled reader).
    general_only: bool,
}

impl ProtobufDecoder {
    pub fn new(reader: MessageDescriptor, registry: Option<Arc<SchemaRegistry>>) -> Result<Self, String> {
        let framed = registry.is_some();
        let nodes = message_nodes(&reader, "", framed, &mut vec![reader.full_name().to_owned()])?;
        let columns = nodes.iter().map(Col::new).collect();
        let plain = if framed {
            None
        } else {
            Some(Writer::new(reader.clone(), plan(&reader, &nodes, "")?, &nodes))
        };
        Ok(ProtobufDecoder {
            nodes,
            columns,
            reader,
            registry,
            plain,
            files: HashMap::new(),
            writers: HashMap::new(),
            last_first: None,
            unavailable: None,
            rows: 0,
            general_only: false,
        })
    }

    /// The compiled writer schema of `id` (fetched from the registry once).
    fn file(&mut self, id: u32) -> Result<FileDescriptor, String> {
        if let Some(found) = self.files.get(&id) {
            return found.clone();
        }
        let registry = self
            .registry
            .as_ref()
            .expect("framed values come with a registry");
        let found = match registry.value_schema(id).and_then(|schema| {
            compile_registered(registry, &schema)
                .map_err(|f| f.context(format_args!("the registry's schema id {id}")))
        }) {
            Ok(file) => Ok(file),
            Err(SchemaFailure::Bad(e)) => Err(e),
            Err(unavailable) => return Err(unavailable.into_decode_error(&mut self.unavailable)),
        };
        // Bounded like `writers`: ids come from the data.
        if self.files.len() < 1024 || found.is_ok() {
            self.files.insert(id, found.clone());
        }
        found
    }

    fn writer(&mut self, id: u32, indexes: Vec<i32>) -> Result<Arc<Writer>, String> {
        let key = (id, indexes);
        if let Some(w) = self.writers.get(&key) {
            return w.clone();
        }
        let file = self.file(id)?;
        let writer = message_at(&file, &key.1)
            .map_err(|e| format!("schema id {id}: {e}"))
            .and_then(|message| {
                let plan = plan(&message, &self.nodes, "").map_err(|e| {
                    format!(
                        "schema id {id} (message {}) does not fit the reader message {}: {e}",
                        message.full_name(),
                        self.reader.full_name()
                    )
                })?;
                Ok(Writer::new(message, plan, &self.nodes))
            });
        // Bounded: the indexes come from the data, so a stream of junk must not grow the cache.
        if self.writers.len() < 1024 {
            self.writers.insert(key, writer.clone());
        }
        writer
    }

    fn decode_message(&mut self, value: &[u8]) -> Result<(), String> {
        let (writer, body) = match &self.plain {
            Some(w) => (w.clone(), value),
            None => {
                if value.len() < WIRE_HEADER || value[0] != WIRE_MAGIC {
                    return Err("not in the Confluent wire format (magic byte 0 + 4-byte schema id)".into());
                }
                let id = u32::from_be_bytes(value[1..WIRE_HEADER].try_into().expect("4 bytes"));
                match &self.last_first {
                    Some((last, writer)) if *last == id && value.get(WIRE_HEADER) == Some(&0) => {
                        (writer.clone(), &value[WIRE_HEADER + 1..])
                    }
                    _ => {
                        let (indexes, used) = read_message_indexes(&value[WIRE_HEADER..])?;
                        let first = used == 1 && indexes == [0];
                        let writer = self.writer(id, indexes)?;
                        if first {
                            self.last_first = Some((id, writer.clone()));
                        }
                        (writer, &value[WIRE_HEADER + used..])
                    }
                }
            }
        };
        if let (Some(wire), false) = (&writer.wire, self.general_only) {
            if wire::read_message(wire, body, &mut self.columns).is_ok() {
                return Ok(());
            }
            // Given up: the general path decodes the value (or says why it cannot).
            for c in &mut self.columns {
                c.truncate(self.rows);
            }
        }
        let m = DynamicMessage::decode(writer.message.clone(), body)
            .map_err(|e| format!("invalid Protobuf ({}): {e}", writer.message.full_name()))?;
        append_fields(&mut self.columns, &self.nodes, &writer.plan, &m)
    }
}

impl Decoder for ProtobufDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        self.nodes.iter().map(|n| Arc::new(n.field())).collect()
    }

    fn decode(&mut self, _key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        let value = require_value(value)?;
        match self.decode_message(value) {
            Ok(()) => {
                self.rows += 1;
                Ok(())
            }
            Err(e) => {
                for c in &mut self.columns {
                    c.truncate(self.rows);
                }
                Err(e)
            }
        }
    }

    fn take_unavailable(&mut self) -> Option<Error> {
        self.unavailable.take()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.columns.iter_mut().map(Col::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type, TimestampNanosecondType};
    use arrow_array::Array;

    const PROTO: &str = r#"
        syntax = "proto3";
        package test.v1;
        import "google/protobuf/timestamp.proto";
        message Reading {
            int64 id = 1;
            repeated float x = 2;
            Kind kind = 3;
            Point at = 4;
            google.protobuf.Timestamp ts = 5;
            optional string note = 6;
            map<string, int32> counts = 7;
            message Point { double lat = 1; double lon = 2; }
            enum Kind { KIND_UNSPECIFIED = 0; KIND_A = 1; KIND_B = 2; }
        }
        message Other { string name = 1; }
    "#;

    fn reading() -> MessageDescriptor {
        load_message(&ProtoSource::Text(PROTO.into()), Some("test.v1.Reading")).unwrap()
    }

    fn sample(desc: &MessageDescriptor, id: i64, note: Option<&str>) -> DynamicMessage {
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("id", Value::I64(id));
        m.set_field_by_name("x", Value::List(vec![Value::F32(0.5), Value::F32(1.5)]));
        m.set_field_by_name("kind", Value::EnumNumber(2));
        let Kind::Message(point) = desc.get_field_by_name("at").unwrap().kind() else {
            panic!()
        };
        let mut p = DynamicMessage::new(point);
        p.set_field_by_name("lat", Value::F64(1.25));
        m.set_field_by_name("at", Value::Message(p));
        let Kind::Message(ts) = desc.get_field_by_name("ts").unwrap().kind() else {
            panic!()
        };
        let mut t = DynamicMessage::new(ts);
        t.set_field_by_name("seconds", Value::I64(1_700_000_000));
        t.set_field_by_name("nanos", Value::I32(123_456_789));
        m.set_field_by_name("ts", Value::Message(t));
        if let Some(n) = note {
            m.set_field_by_name("note", Value::String(n.into()));
        }
        m.set_field_by_name(
            "counts",
            Value::Map(HashMap::from([
                (MapKey::String("b".into()), Value::I32(2)),
                (MapKey::String("a".into()), Value::I32(1)),
            ])),
        );
        m
    }

    #[test]
    fn message_indexes_round_trip() {
        for indexes in [vec![0], vec![1], vec![0, 2], vec![3, 0, 1], vec![200]] {
            let mut out = vec![];
            write_message_indexes(&mut out, &indexes);
            out.push(0x42); // the body follows
            let (read, used) = read_message_indexes(&out).unwrap();
            assert_eq!(read, indexes);
            assert_eq!(out[used], 0x42);
        }
        // [0] is the single byte 0; [1] is count 1 (zigzag 2), index 1 (zigzag 2).
        let mut out = vec![];
        write_message_indexes(&mut out, &[0]);
        assert_eq!(out, [0]);
        out.clear();
        write_message_indexes(&mut out, &[1]);
        assert_eq!(out, [2, 2]);
        assert!(read_message_indexes(&[]).is_err());
        assert!(read_message_indexes(&[0x80]).is_err());
        assert!(read_message_indexes(&[2])
            .unwrap_err()
            .contains("invalid message index count"));
        assert!(read_message_indexes(&[2, 1])
            .unwrap_err()
            .contains("invalid message index -1"));

        let reading = reading();
        assert_eq!(message_indexes(&reading), [0]);
        let point = reading.child_messages().find(|m| m.name() == "Point").unwrap();
        assert_eq!(message_indexes(&point), [0, 1]); // after the map entry CountsEntry
        assert_eq!(message_at(&reading.parent_file(), &[0, 1]).unwrap(), point);
        let other = find_message(&reading.parent_file(), Some("Other")).unwrap();
        assert_eq!(message_indexes(&other), [1]);
        assert!(message_at(&reading.parent_file(), &[5]).is_err());
    }

    #[test]
    fn plain_round_trip_into_arrow() {
        let desc = reading();
        let mut d = ProtobufDecoder::new(desc.clone(), None).unwrap();
        let names: Vec<String> = d.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["id", "x", "kind", "at", "ts", "note", "counts"]);
        assert!(!d.fields()[0].is_nullable());
        assert!(d.fields()[5].is_nullable());
        d.decode(None, Some(&sample(&desc, 1, Some("hi")).encode_to_vec()))
            .unwrap();
        // A value that does not parse appends nothing.
        let err = d.decode(None, Some(&[0x0a, 0xff])).unwrap_err();
        assert!(err.contains("invalid Protobuf"), "{err}");
        d.decode(None, Some(&sample(&desc, 2, None).encode_to_vec()))
            .unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 2]);
        let x = cols[1].as_list::<i32>();
        assert_eq!(
            x.values().as_primitive::<Float32Type>().values(),
            &[0.5, 1.5, 0.5, 1.5]
        );
        assert_eq!(cols[2].as_string::<i32>().value(0), "KIND_B");
        let at = cols[3].as_struct();
        assert_eq!(
            at.column(0)
                .as_primitive::<arrow_array::types::Float64Type>()
                .value(1),
            1.25
        );
        let ts = cols[4].as_primitive::<TimestampNanosecondType>();
        assert_eq!(ts.value(0), 1_700_000_000_123_456_789);
        assert_eq!(ts.timezone(), Some("UTC"));
        let note = cols[5].as_string::<i32>();
        assert_eq!((note.value(0), note.is_null(1)), ("hi", true));
        let counts = cols[6].as_map();
        assert_eq!(counts.value(0).column(0).as_string::<i32>().value(0), "a");
        let batch =
            arrow_array::RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(d.fields())), cols).unwrap();
        assert_eq!(batch.num_rows(), 2);
    }

    #[test]
    fn writer_fields_match_reader_columns_by_name() {
        let reader = reading();
        let writer = load_message(
            &ProtoSource::Text(
                "syntax = \"proto3\"; message W { string note = 9; int32 id = 1; bool extra = 3; }".into(),
            ),
            None,
        )
        .unwrap();
        let nodes = message_nodes(&reader, "", true, &mut vec![]).unwrap();
        let p = plan(&writer, &nodes, "").unwrap();
        let mut cols: Vec<Col> = nodes.iter().map(Col::new).collect();
        let mut m = DynamicMessage::new(writer.clone());
        m.set_field_by_name("id", Value::I32(7));
        m.set_field_by_name("note", Value::String("n".into()));
        append_fields(&mut cols, &nodes, &p, &m).unwrap();
        let arrays: Vec<ArrayRef> = cols.iter_mut().map(Col::finish).collect();
        assert_eq!(arrays[0].as_primitive::<Int64Type>().value(0), 7); // int32 widened to int64
        assert!(arrays[1].is_null(0) && arrays[3].is_null(0) && arrays[4].is_null(0));
        assert_eq!(arrays[5].as_string::<i32>().value(0), "n");

        let clash = load_message(
            &ProtoSource::Text("syntax = \"proto3\"; message W { string id = 1; }".into()),
            None,
        )
        .unwrap();
        assert!(plan(&clash, &nodes, "").unwrap_err().contains("field 'id'"));
    }

    #[test]
    fn recursive_messages_are_refused() {
        let tree = load_message(
            &ProtoSource::Text("syntax = \"proto3\"; message Tree { repeated Tree children = 1; }".into()),
            None,
        )
        .unwrap();
        assert!(ProtobufDecoder::new(tree, None)
            .err()
            .unwrap()
            .contains("contains itself"));
    }
}
