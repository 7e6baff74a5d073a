//! `protobuf`: Protobuf messages, plain or in the Confluent Schema Registry wire format.
//!
//! Columns follow the reader message: scalars → primitive columns, `repeated` → lists, nested
//! messages → structs, maps → Arrow maps, enums → their value names, `google.protobuf.Timestamp`
//! → nanosecond UTC timestamps, the `google.protobuf.*Value` wrappers → nullable scalars.
//! Fields with presence (proto3 `optional`, messages, oneof members) are nullable; with a
//! registry every column is, because a writer schema may lack any field. Writer fields are matched
//! to the reader's columns by name (a plan per writer); values are read by the writer's compiled
//! reader (`wire`), or decoded into a `DynamicMessage` where it gives a value up.

use super::columns::{message_nodes, Node};
use super::read_plan::{append_fields, plan, Plan};
use super::schema::{compile_registered, message_at, read_message_indexes};
use super::storage::Col;
use super::wire;
use crate::error::Error;
use crate::format::{require_value, Decoder};
use crate::registry::{SchemaFailure, SchemaRegistry, WIRE_HEADER, WIRE_MAGIC};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor};
use std::collections::HashMap;
use std::sync::Arc;

/// A writer's message and how it maps onto the reader's columns.
pub(super) struct Writer {
    message: MessageDescriptor,
    plan: Plan,
    /// Its compiled reader (none for shapes it does not read, such as maps).
    pub(super) wire: Option<wire::WirePlan>,
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
    pub(super) plain: Option<Arc<Writer>>,
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
    pub(super) general_only: bool,
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
    use super::super::schema::{
        find_message, load_message, message_indexes, write_message_indexes, ProtoSource,
    };
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type, TimestampNanosecondType};
    use arrow_array::Array;
    use prost::Message as _;
    use prost_reflect::{Kind, MapKey, Value};

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
