//! What a Protobuf producer registers: the message's file under the producer's subject and, first,
//! every file it imports (other than the well-known types, which every registry knows) under a
//! subject of its own, named by the file's import path as Confluent's serializers name it
//! (`reference.subject.name.strategy`'s default). Each schema then names the files it imports as
//! references `{name: import path, subject, version}`, which is how a consumer fetching the
//! schema by id finds its imports (`schema.rs` resolves them depth-first).

use super::ProtoSource;
use crate::error::Result;
use crate::registry::{SchemaReference, SchemaRegistry, SchemaType};
use prost::Message as _;
use prost_reflect::{FileDescriptor, MessageDescriptor};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The schemas a send registers, imports before the files that import them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoRegistration {
    /// The message's file: its `.proto` text, or a base64 `FileDescriptorProto` for a descriptor
    /// set (the form Confluent's Python serializer registers).
    pub schema: String,
    /// The import paths of the files the message's file imports (well-known types left out).
    pub imports: Vec<String>,
    /// Every file imported directly or indirectly, each after its own imports.
    pub dependencies: Vec<ProtoDependency>,
}

/// One imported file, registered under the subject named by its import path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoDependency {
    pub name: String,
    pub schema: String,
    pub imports: Vec<String>,
}

/// The well-known types (`google/protobuf/*.proto`) ship with every Protobuf toolchain and every
/// registry: they are imported without a reference, as Confluent's serializers do by default.
fn is_well_known(import: &str) -> bool {
    import.starts_with("google/protobuf/")
}

fn user_imports(file: &FileDescriptor) -> Vec<String> {
    file.dependencies()
        .map(|d| d.name().to_owned())
        .filter(|name| !is_well_known(name))
        .collect()
}

/// The text a file is registered as: its source where kafka-ml read it from a `.proto` file on
/// disk (imports resolve relative to the directory of the file the producer was given), else
/// its `FileDescriptorProto` in base64.
fn schema_text(file: &FileDescriptor, source_dir: Option<&Path>) -> Result<String, String> {
    if let Some(dir) = source_dir {
        let path = dir.join(file.name());
        return std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read '{}' (imported as '{}'): {e}",
                path.display(),
                file.name()
            )
        });
    }
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.encode(file.file_descriptor_proto().encode_to_vec()))
}

/// What a producer registers for `message` of `source`.
pub fn registration(source: &ProtoSource, message: &MessageDescriptor) -> Result<ProtoRegistration, String> {
    let file = message.parent_file();
    let source_dir = match source {
        ProtoSource::File(path) => Some(
            path.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
        ProtoSource::Text(_) | ProtoSource::DescriptorSet(_) => None,
    };
    let mut dependencies = Vec::new();
    let mut seen = HashSet::new();
    collect_imports(&file, source_dir.as_deref(), &mut seen, &mut dependencies)?;
    let schema = match source {
        ProtoSource::Text(text) => text.clone(),
        ProtoSource::File(_) | ProtoSource::DescriptorSet(_) => schema_text(&file, source_dir.as_deref())?,
    };
    Ok(ProtoRegistration {
        schema,
        imports: user_imports(&file),
        dependencies,
    })
}

/// `file`'s imports, depth-first, each after its own (import graphs have no cycles: protoc and
/// protox refuse them).
fn collect_imports(
    file: &FileDescriptor,
    source_dir: Option<&Path>,
    seen: &mut HashSet<String>,
    out: &mut Vec<ProtoDependency>,
) -> Result<(), String> {
    for import in file.dependencies() {
        if is_well_known(import.name()) || !seen.insert(import.name().to_owned()) {
            continue;
        }
        collect_imports(&import, source_dir, seen, out)?;
        out.push(ProtoDependency {
            name: import.name().to_owned(),
            schema: schema_text(&import, source_dir)?,
            imports: user_imports(&import),
        });
    }
    Ok(())
}

/// Registers (or, without `auto_register`, looks up) every file of `registration` and returns the
/// id of the message's file under `subject`.
pub fn register(
    registry: &SchemaRegistry,
    subject: &str,
    registration: &ProtoRegistration,
    auto_register: bool,
) -> Result<u32> {
    let mut versions: HashMap<&str, i32> = HashMap::new();
    let references = |imports: &[String], versions: &HashMap<&str, i32>| -> Vec<SchemaReference> {
        imports
            .iter()
            .map(|name| SchemaReference {
                name: name.clone(),
                subject: name.clone(),
                // Registered just before: `dependencies` lists every import before its importers.
                version: versions[name.as_str()],
            })
            .collect()
    };
    for dependency in &registration.dependencies {
        let refs = references(&dependency.imports, &versions);
        let (_, version) = registry.version_for(
            &dependency.name,
            &dependency.schema,
            SchemaType::Protobuf,
            &refs,
            auto_register,
        )?;
        versions.insert(&dependency.name, version);
    }
    let refs = references(&registration.imports, &versions);
    registry.id_for(
        subject,
        &registration.schema,
        SchemaType::Protobuf,
        &refs,
        auto_register,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::protobuf::load_message;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn imports_come_before_their_importers_and_well_known_types_are_left_out() {
        let dir = std::env::temp_dir().join(format!("kafka-ml-proto-reg-{}", std::process::id()));
        write(
            &dir,
            "units/unit.proto",
            "syntax = \"proto3\";\npackage u;\nenum Unit { NONE = 0; METRE = 1; }\n",
        );
        write(
            &dir,
            "common/point.proto",
            "syntax = \"proto3\";\npackage c;\nimport \"units/unit.proto\";\nmessage Point { double x = 1; u.Unit unit = 2; }\n",
        );
        write(
            &dir,
            "shape.proto",
            "syntax = \"proto3\";\npackage s;\nimport \"common/point.proto\";\nimport \"units/unit.proto\";\n\
             import \"google/protobuf/timestamp.proto\";\n\
             message Shape { repeated c.Point points = 1; u.Unit unit = 2; google.protobuf.Timestamp at = 3; }\n",
        );
        let source = ProtoSource::File(dir.join("shape.proto"));
        let message = load_message(&source, Some("Shape")).unwrap();
        let r = registration(&source, &message).unwrap();
        assert_eq!(r.imports, ["common/point.proto", "units/unit.proto"]);
        let names: Vec<&str> = r.dependencies.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["units/unit.proto", "common/point.proto"]);
        assert_eq!(r.dependencies[1].imports, ["units/unit.proto"]);
        assert!(r.dependencies[0].imports.is_empty());
        // Files read from disk are registered as their text.
        assert!(r.schema.contains("message Shape"));
        assert!(r.dependencies[1].schema.contains("message Point"));

        // From a descriptor set, each file is its FileDescriptorProto in base64.
        let pool = message.parent_pool();
        let set = prost_types::FileDescriptorSet {
            file: pool.files().map(|f| f.file_descriptor_proto().clone()).collect(),
        };
        let source = ProtoSource::DescriptorSet(set.encode_to_vec());
        let message = load_message(&source, Some("s.Shape")).unwrap();
        let r = registration(&source, &message).unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&r.dependencies[1].schema)
            .unwrap();
        let point = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(point.name.as_deref(), Some("common/point.proto"));
        assert_eq!(r.imports, ["common/point.proto", "units/unit.proto"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
