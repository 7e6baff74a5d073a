use super::super::columns::message_nodes;
use super::super::read_plan::{append_fields, plan};
use super::super::{load_message, ProtoSource, ProtobufDecoder};
use super::*;
use crate::format::test_rng::Rng;
use crate::format::Decoder;
use arrow_array::{Array, ArrayRef};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};

const PROTO: &str = r#"
    syntax = "proto3";
    package diff.v1;
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/wrappers.proto";
    message Row {
        int64 id = 1; repeated float x = 2; int32 y = 3; sint32 s32 = 4; sint64 s64 = 5;
        uint32 u32 = 6; uint64 u64 = 7; fixed32 f32 = 8; fixed64 f64 = 9; sfixed32 sf32 = 10;
        sfixed64 sf64 = 11; double d = 12; bool b = 13; string name = 14; bytes blob = 15;
        Color color = 16; optional int32 maybe = 17; Inner inner = 18; repeated Inner inners = 19;
        google.protobuf.Timestamp ts = 20; google.protobuf.Int32Value wrapped = 21;
        google.protobuf.StringValue wname = 22; repeated string tags = 23;
        repeated Color colors = 24; repeated int64 ids = 25; repeated double ds = 26;
        oneof choice { string text = 27; int32 number = 28; }
        int32 far = 300;
        message Inner { int32 a = 1; repeated float v = 2; string s = 3; }
        enum Color { RED = 0; GREEN = 1; BLUE = 2; }
    }
    // An older writer: fewer fields, narrower types (int32 → int64, float → double).
    message Older { int32 id = 1; repeated float x = 2; float d = 12; string extra = 40; }
"#;

fn message(name: &str) -> MessageDescriptor {
    load_message(&ProtoSource::Text(PROTO.into()), Some(name)).unwrap()
}

fn random_value(rng: &mut Rng, kind: &Kind) -> Value {
    let r = rng.next();
    match kind {
        Kind::Bool => Value::Bool(r & 1 == 1),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(r as i32 >> rng.below(31)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(r as i64 >> rng.below(63)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(r as u32 >> rng.below(31)),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(r >> rng.below(63)),
        Kind::Float => Value::F32((r as i32) as f32 / 7.0),
        Kind::Double => Value::F64((r as i64) as f64 / 3.0),
        Kind::String => Value::String(["", "a", "héllo", "z".repeat(40).as_str()][r as usize % 4].into()),
        Kind::Bytes => Value::Bytes(vec![r as u8; (r % 5) as usize].into()),
        Kind::Enum(_) => Value::EnumNumber((r % 5) as i32), // 3 and 4 are not named
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            let mut t = DynamicMessage::new(m.clone());
            // Now and then out of the nanosecond range: the general path reports it.
            let seconds = if r % 20 == 0 {
                i64::MAX / 2
            } else {
                (r % 4_000_000_000) as i64
            };
            t.set_field_by_name("seconds", Value::I64(seconds));
            t.set_field_by_name("nanos", Value::I32((r % 1_000_000_000) as i32));
            Value::Message(t)
        }
        Kind::Message(m) => Value::Message(random_message(rng, m)),
    }
}

fn random_message(rng: &mut Rng, desc: &MessageDescriptor) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    for field in desc.fields() {
        if rng.below(10) < 3 {
            continue; // absent
        }
        let value = if field.is_list() {
            Value::List(
                (0..rng.below(4))
                    .map(|_| random_value(rng, &field.kind()))
                    .collect(),
            )
        } else {
            random_value(rng, &field.kind())
        };
        m.set_field(&field, value);
    }
    m
}

/// Reads `messages` as the decoder does (the compiled reader, the general path where it gives
/// up) and with the general path only; returns both results and how many took the compiled one.
fn read_both(
    writer: &MessageDescriptor,
    nodes: &[Node],
    messages: &[Vec<u8>],
) -> (Vec<ArrayRef>, Vec<ArrayRef>, usize) {
    let p = plan(writer, nodes, "").unwrap();
    let wire = compile(&p, nodes).expect("the writer compiles");
    let mut fast: Vec<Col> = nodes.iter().map(Col::new).collect();
    let mut general: Vec<Col> = nodes.iter().map(Col::new).collect();
    let (mut rows, mut compiled) = (0, 0);
    let decode_general = |cols: &mut [Col], m: &[u8]| {
        let m = DynamicMessage::decode(writer.clone(), m).map_err(|e| e.to_string())?;
        append_fields(cols, nodes, &p, &m)
    };
    for m in messages {
        let a = match read_message(&wire, m, &mut fast) {
            Ok(()) => {
                compiled += 1;
                Ok(())
            }
            Err(GiveUp) => {
                fast.iter_mut().for_each(|c| c.truncate(rows));
                decode_general(&mut fast, m)
            }
        };
        let b = decode_general(&mut general, m);
        assert_eq!(a, b, "message {m:?}");
        if a.is_ok() {
            rows += 1;
        } else {
            fast.iter_mut().for_each(|c| c.truncate(rows));
            general.iter_mut().for_each(|c| c.truncate(rows));
        }
    }
    let finish = |cols: &mut Vec<Col>| cols.iter_mut().map(Col::finish).collect::<Vec<_>>();
    (finish(&mut fast), finish(&mut general), compiled)
}

fn assert_same(a: &[ArrayRef], b: &[ArrayRef]) {
    for (x, y) in a.iter().zip(b) {
        x.to_data().validate_full().unwrap();
        assert_eq!(x.to_data(), y.to_data());
    }
}

/// The compiled reader gives exactly the general path's columns, and gives up (so the general
/// path decides) on duplicated fields, merged messages, truncated or corrupted input.
#[test]
fn compiled_reader_reads_like_the_general_path() {
    let row = message("diff.v1.Row");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for i in 0..1500 {
        let mut m = random_message(&mut rng, &row).encode_to_vec();
        match i % 12 {
            8 => {
                // Two messages concatenated: fields repeat, the last wins, messages merge.
                m.extend(random_message(&mut rng, &row).encode_to_vec());
            }
            9 if !m.is_empty() => m.truncate(rng.below(m.len())),
            10 if !m.is_empty() => {
                let at = rng.below(m.len());
                m[at] ^= 1 << rng.below(8);
            }
            11 => m.extend([0xf8, 0x3e, 0x05, 0x8a, 0x3f, 0x01, 0x00]), // unknown fields 999, 1009
            _ => {}
        }
        messages.push(m);
    }
    // A repeated float written unpacked (parsers must accept both encodings).
    messages.push(vec![0x15, 0, 0, 0x80, 0x3f, 0x15, 0, 0, 0, 0x40]);
    for all_nullable in [false, true] {
        let nodes = message_nodes(&row, "", all_nullable, &mut vec![]).unwrap();
        let (a, b, compiled) = read_both(&row, &nodes, &messages);
        assert_same(&a, &b);
        assert!(a[0].len() > 1000, "{} rows", a[0].len());
        assert!(compiled > 1000, "only {compiled} values took the compiled reader");
    }
    // The decoder itself: compiled reader first, general path where it gives up.
    let mut fast = ProtobufDecoder::new(row.clone(), None).unwrap();
    let mut general = ProtobufDecoder::new(row.clone(), None).unwrap();
    general.general_only = true;
    assert!(fast.plain.as_ref().is_some_and(|w| w.wire.is_some()));
    for m in &messages {
        assert_eq!(fast.decode(None, Some(m)), general.decode(None, Some(m)));
    }
    assert_same(&fast.finish(), &general.finish());
    // An older writer's values, read with the reader's (wider, nullable) columns.
    let older = message("diff.v1.Older");
    let old: Vec<Vec<u8>> = (0..300)
        .map(|_| random_message(&mut rng, &older).encode_to_vec())
        .collect();
    let nodes = message_nodes(&row, "", true, &mut vec![]).unwrap();
    let (a, b, compiled) = read_both(&older, &nodes, &old);
    assert_same(&a, &b);
    assert_eq!(compiled, 300);
}

#[test]
fn maps_have_no_compiled_reader() {
    let m = load_message(
        &ProtoSource::Text("syntax = \"proto3\"; message M { map<string, int32> m = 1; }".into()),
        None,
    )
    .unwrap();
    let nodes = message_nodes(&m, "", false, &mut vec![]).unwrap();
    assert!(compile(&plan(&m, &nodes, "").unwrap(), &nodes).is_none());
}
