//! The schema side, shared by the decoder and the encoder: compiling .proto text with `protox`,
//! descriptor sets, a registry's schemas with their references, and the Confluent message
//! indexes.

use crate::error::Error;
use crate::registry::{RegisteredSchema, SchemaFailure, SchemaRegistry, SchemaType};
use prost::Message as _;
use prost_reflect::{DescriptorPool, FileDescriptor, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use std::collections::HashMap;
use std::path::PathBuf;

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
