use super::*;
use apache_avro::to_avro_datum;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::Array;
use arrow_schema::{DataType, Field, Fields};

const SCHEMA: &str = r#"{"type": "record", "name": "r", "fields": [
    {"name": "id", "type": "long"},
    {"name": "x", "type": {"type": "array", "items": "double"}},
    {"name": "tag", "type": ["null", "string"]}]}"#;

#[test]
fn named_types_from_referenced_schemas_resolve() {
    const KIND: &str = r#"{"type": "enum", "name": "Kind", "namespace": "ml", "symbols": ["A", "B"]}"#;
    const READING: &str = r#"{"type": "record", "name": "Reading", "namespace": "ml", "fields": [
        {"name": "id", "type": "long"}, {"name": "kind", "type": "ml.Kind"},
        {"name": "maybe", "type": ["null", "ml.Kind"], "default": null}]}"#;
    let (schema, named) = Schema::parse_str_with_list(READING, [KIND]).unwrap();
    let names = ResolvedSchema::try_from(named.iter().chain([&schema]).collect::<Vec<_>>()).unwrap();
    let encode = |id: i64, kind: u32, maybe: Option<u32>| {
        let symbol = |k: u32| Value::Enum(k, ["A", "B"][k as usize].to_string());
        let value = Value::Record(vec![
            ("id".into(), Value::Long(id)),
            ("kind".into(), symbol(kind)),
            (
                "maybe".into(),
                match maybe {
                    Some(k) => Value::Union(1, Box::new(symbol(k))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
        ]);
        apache_avro::to_avro_datum_schemata(&schema, names.get_schemata(), value).unwrap()
    };
    let mut d = AvroDecoder::new(READING, &[KIND.to_string()], &[], None).unwrap();
    for (id, kind, maybe) in [(1, 0, None), (2, 1, Some(0))] {
        d.decode(None, Some(&encode(id, kind, maybe))).unwrap();
    }
    let cols = d.finish();
    assert_eq!(
        cols[1].as_string::<i32>().iter().collect::<Vec<_>>(),
        [Some("A"), Some("B")]
    );
    assert_eq!(
        cols[2].as_string::<i32>().iter().collect::<Vec<_>>(),
        [None, Some("A")]
    );
    // Without the referenced schema the reader schema does not parse.
    assert!(AvroDecoder::new(READING, &[], &[], None).is_err());
}

fn datum(id: i64, tag: Option<&str>) -> Vec<u8> {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let tag = match tag {
        Some(t) => Value::Union(1, Box::new(Value::String(t.into()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    let rec = Value::Record(vec![
        ("id".into(), Value::Long(id)),
        (
            "x".into(),
            Value::Array(vec![Value::Double(0.5), Value::Double(1.5)]),
        ),
        ("tag".into(), tag),
    ]);
    to_avro_datum(&schema, rec).unwrap()
}

#[test]
fn plain_and_confluent_framing() {
    let mut plain = AvroDecoder::new(SCHEMA, &[], &[], None).unwrap();
    plain.decode(None, Some(&datum(1, Some("a")))).unwrap();
    plain.decode(None, Some(&datum(2, None))).unwrap();
    assert!(plain
        .decode(None, Some(&[0xff, 0xff]))
        .unwrap_err()
        .contains("invalid Avro"));
    let cols = plain.finish();
    assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 2]);
    assert_eq!(
        cols[1]
            .as_list::<i32>()
            .values()
            .as_primitive::<Float64Type>()
            .values(),
        &[0.5, 1.5, 0.5, 1.5]
    );
    assert!(cols[2].is_null(1));

    let mut framed = AvroDecoder::new(SCHEMA, &[], &[(7, SCHEMA.to_string())], None).unwrap();
    let mut msg = vec![0, 0, 0, 0, 7];
    msg.extend(datum(3, None));
    framed.decode(None, Some(&msg)).unwrap();
    msg[4] = 9;
    assert!(framed
        .decode(None, Some(&msg))
        .unwrap_err()
        .contains("unknown schema id 9 (known ids: [7])"));
    assert!(framed
        .decode(None, Some(&datum(3, None)))
        .unwrap_err()
        .contains("Confluent wire format"));
    assert_eq!(framed.finish()[0].len(), 1);
}

const WRITER: &str = r#"{"type": "record", "name": "m", "fields": [
    {"name": "id", "type": "long"},
    {"name": "small", "type": "int"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "ok", "type": "boolean"},
    {"name": "name", "type": "string"},
    {"name": "blob", "type": "bytes"},
    {"name": "color", "type": {"type": "enum", "name": "C", "symbols": ["RED", "GREEN", "BLUE"]}},
    {"name": "note", "type": ["null", "string"]},
    {"name": "late", "type": ["long", "null"]},
    {"name": "x", "type": {"type": "array", "items": "float"}},
    {"name": "ids", "type": {"type": "array", "items": "int"}},
    {"name": "gone_map", "type": {"type": "map", "values": "double"}},
    {"name": "gone_rec", "type": {"type": "record", "name": "g", "fields": [
        {"name": "a", "type": "string"}, {"name": "b", "type": ["null", "int"]}]}},
    {"name": "gone_fixed", "type": {"type": "fixed", "name": "F", "size": 3}}]}"#;

// Promotions (int → long, float → double, long → double), an enum without one writer symbol (its default), fields only the reader has.
const READER: &str = r#"{"type": "record", "name": "m", "fields": [
    {"name": "id", "type": "long"},
    {"name": "small", "type": "long"},
    {"name": "f", "type": "double"},
    {"name": "d", "type": "double"},
    {"name": "ok", "type": "boolean"},
    {"name": "name", "type": "string"},
    {"name": "blob", "type": "bytes"},
    {"name": "color", "type": {"type": "enum", "name": "C", "symbols": ["RED", "GREEN", "OTHER"], "default": "OTHER"}},
    {"name": "note", "type": ["null", "string"]},
    {"name": "late", "type": ["null", "double"]},
    {"name": "x", "type": {"type": "array", "items": "float"}},
    {"name": "ids", "type": {"type": "array", "items": "long"}},
    {"name": "weight", "type": "double", "default": 1.5},
    {"name": "label", "type": ["null", "string"], "default": null},
    {"name": "level", "type": "int", "default": 3},
    {"name": "tags", "type": {"type": "array", "items": "double"}, "default": [1, 2.5]},
    {"name": "kind", "type": "string", "default": "k"}]}"#;

fn random_record(rng: &mut u64, schema: &Schema) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let n = (next() % 5) as usize;
    let rec = Value::Record(vec![
        ("id".into(), Value::Long(next() as i64)),
        ("small".into(), Value::Int(next() as i32)),
        (
            "f".into(),
            Value::Float(f32::from_bits(next() as u32 & 0x7f7f_ffff)),
        ),
        ("d".into(), Value::Double((next() % 1000) as f64 / 7.0)),
        ("ok".into(), Value::Boolean(next() % 2 == 0)),
        ("name".into(), Value::String(format!("n{}é", next() % 100))),
        ("blob".into(), Value::Bytes(vec![(next() % 256) as u8; n])),
        (
            "color".into(),
            Value::Enum(
                (next() % 3) as u32,
                ["RED", "GREEN", "BLUE"][(next() % 3) as usize].into(),
            ),
        ),
        (
            "note".into(),
            if next() % 3 == 0 {
                Value::Union(0, Box::new(Value::Null))
            } else {
                Value::Union(1, Box::new(Value::String("hi".into())))
            },
        ),
        (
            "late".into(),
            if next() % 2 == 0 {
                Value::Union(1, Box::new(Value::Null))
            } else {
                Value::Union(0, Box::new(Value::Long(next() as i64 % 1_000_000)))
            },
        ),
        (
            "x".into(),
            Value::Array((0..n).map(|i| Value::Float(i as f32 * 0.5)).collect()),
        ),
        (
            "ids".into(),
            Value::Array((0..n).map(|_| Value::Int(next() as i32)).collect()),
        ),
        (
            "gone_map".into(),
            Value::Map(
                (0..n)
                    .map(|i| (format!("k{i}"), Value::Double(i as f64)))
                    .collect(),
            ),
        ),
        (
            "gone_rec".into(),
            Value::Record(vec![
                ("a".into(), Value::String("z".repeat(n))),
                ("b".into(), Value::Union(1, Box::new(Value::Int(7)))),
            ]),
        ),
        ("gone_fixed".into(), Value::Fixed(3, vec![1, 2, 3])),
    ]);
    // Enum values must carry their symbol's own index.
    let rec = match rec {
        Value::Record(mut fields) => {
            if let Value::Enum(_, s) = &fields[7].1 {
                let i = ["RED", "GREEN", "BLUE"].iter().position(|x| x == s).unwrap() as u32;
                fields[7].1 = Value::Enum(i, s.clone());
            }
            Value::Record(fields)
        }
        v => v,
    };
    to_avro_datum(schema, rec).unwrap()
}

/// The compiled plan gives exactly the general path's rows, and fails on the same messages.
#[test]
fn compiled_plans_decode_like_the_general_path() {
    let writer = Schema::parse_str(WRITER).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for i in 0..400 {
        let mut m = vec![0, 0, 0, 0, 1];
        m.extend(random_record(&mut rng, &writer));
        match i % 10 {
            7 => m.truncate(m.len() - 1 - i % 4), // cut short
            8 => m.push(0),                       // a byte too many
            9 => m[5] = 0xff,                     // a varint that runs on
            _ => {}
        }
        messages.push(m);
    }
    let registry = [(1, WRITER.to_string())];
    let mut fast = AvroDecoder::new(READER, &[], &registry, None).unwrap();
    let mut general = AvroDecoder::new(READER, &[], &registry, None).unwrap();
    general.general_only = Some(());
    let mut failures = 0;
    for m in &messages {
        let (a, b) = (fast.decode(None, Some(m)), general.decode(None, Some(m)));
        assert_eq!(a.is_ok(), b.is_ok(), "fast {a:?} vs general {b:?}");
        failures += usize::from(a.is_err());
    }
    assert!(
        fast.plans.get(&Some(1)).is_some_and(Option::is_some),
        "the plan compiled"
    );
    assert!(failures >= 80, "{failures}");
    let (a, b) = (fast.finish(), general.finish());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.to_data(), y.to_data());
    }
    assert!(a[0].len() >= 250);
}

/// v1 of a record with nested records: a struct, a nullable struct with a record inside, an
/// array of records, and a nested field v2 removes.
const NESTED_V1: &str = r#"{"type": "record", "name": "Reading", "namespace": "ml", "fields": [
    {"name": "id", "type": "long"},
    {"name": "features", "type": {"type": "record", "name": "Features", "fields": [
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "y", "type": "int"},
        {"name": "gone", "type": "string"}]}},
    {"name": "meta", "type": ["null", {"type": "record", "name": "Meta", "fields": [
        {"name": "source", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "where", "type": {"type": "record", "name": "Where", "fields": [
            {"name": "lat", "type": "double"}, {"name": "note", "type": ["null", "string"]}]}}]}]},
    {"name": "points", "type": {"type": "array", "items": {"type": "record", "name": "P", "fields": [
        {"name": "a", "type": "int"}, {"name": "b", "type": "string"}]}}}]}"#;

/// v2: `features.gone` removed, `features.z` added with a default, `features.y` promoted to
/// long, `P.c` added with a default.
const NESTED_V2: &str = r#"{"type": "record", "name": "Reading", "namespace": "ml", "fields": [
    {"name": "id", "type": "long"},
    {"name": "features", "type": {"type": "record", "name": "Features", "fields": [
        {"name": "x", "type": {"type": "array", "items": "float"}},
        {"name": "y", "type": "long"},
        {"name": "z", "type": "double", "default": 2.5}]}},
    {"name": "meta", "type": ["null", {"type": "record", "name": "Meta", "fields": [
        {"name": "source", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "where", "type": {"type": "record", "name": "Where", "fields": [
            {"name": "lat", "type": "double"}, {"name": "note", "type": ["null", "string"]}]}}]}]},
    {"name": "points", "type": {"type": "array", "items": {"type": "record", "name": "P", "fields": [
        {"name": "a", "type": "int"}, {"name": "b", "type": "string"},
        {"name": "c", "type": ["null", "string"], "default": null}]}}}]}"#;

fn nested_v1(i: i64, with_meta: bool, points: usize) -> Vec<u8> {
    let schema = Schema::parse_str(NESTED_V1).unwrap();
    let rec = |fields: Vec<(&str, Value)>| {
        Value::Record(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    };
    let meta = if with_meta {
        Value::Union(
            1,
            Box::new(rec(vec![
                ("source", Value::String(format!("s{i}"))),
                ("ts", Value::TimestampMillis(1_700_000_000_000 + i)),
                (
                    "where",
                    rec(vec![
                        ("lat", Value::Double(i as f64 / 4.0)),
                        (
                            "note",
                            if i % 2 == 0 {
                                Value::Union(0, Box::new(Value::Null))
                            } else {
                                Value::Union(1, Box::new(Value::String("n".into())))
                            },
                        ),
                    ]),
                ),
            ])),
        )
    } else {
        Value::Union(0, Box::new(Value::Null))
    };
    let value = rec(vec![
        ("id", Value::Long(i)),
        (
            "features",
            rec(vec![
                (
                    "x",
                    Value::Array((0..i % 3).map(|j| Value::Float(j as f32 + 0.5)).collect()),
                ),
                ("y", Value::Int(i as i32 * 10)),
                ("gone", Value::String("g".repeat(i as usize))),
            ]),
        ),
        ("meta", meta),
        (
            "points",
            Value::Array(
                (0..points)
                    .map(|j| {
                        rec(vec![
                            ("a", Value::Int(j as i32)),
                            ("b", Value::String(format!("p{j}"))),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    to_avro_datum(&schema, value).unwrap()
}

/// Both paths (the compiled plan and apache-avro's resolution) over the same messages.
fn both_paths(reader: &str, writer: &str, messages: &[Vec<u8>]) -> (Vec<ArrayRef>, Vec<bool>) {
    let registry = [(1, writer.to_string())];
    let mut fast = AvroDecoder::new(reader, &[], &registry, None).unwrap();
    let mut general = AvroDecoder::new(reader, &[], &registry, None).unwrap();
    general.general_only = Some(());
    let mut ok = Vec::new();
    for body in messages {
        let mut m = vec![0, 0, 0, 0, 1];
        m.extend(body);
        let (a, b) = (fast.decode(None, Some(&m)), general.decode(None, Some(&m)));
        assert_eq!(a.is_ok(), b.is_ok(), "fast {a:?} vs general {b:?}");
        ok.push(a.is_ok());
    }
    assert!(
        fast.plans.get(&Some(1)).is_some_and(Option::is_some),
        "the plan compiled"
    );
    let (a, b) = (fast.finish(), general.finish());
    assert_eq!(fast.fields(), general.fields());
    for ((x, y), f) in a.iter().zip(&b).zip(fast.fields()) {
        x.to_data().validate_full().unwrap();
        assert_eq!(x.data_type(), f.data_type());
        assert_eq!(x.to_data(), y.to_data(), "column '{}'", f.name());
    }
    (a, ok)
}

#[test]
fn nested_records_become_struct_columns() {
    let messages: Vec<Vec<u8>> = (0..6)
        .map(|i| nested_v1(i, i % 3 != 1, (i % 3) as usize))
        .collect();
    let (cols, ok) = both_paths(NESTED_V1, NESTED_V1, &messages);
    assert!(ok.iter().all(|&o| o));
    let d = AvroDecoder::new(NESTED_V1, &[], &[], None).unwrap();
    let fields = d.fields();
    let f = |name: &str, dt: DataType, nullable: bool| Field::new(name, dt, nullable);
    let list = |dt: DataType| DataType::List(Arc::new(Field::new("item", dt, false)));
    let features = Fields::from(vec![
        f("x", list(DataType::Float32), false),
        f("y", DataType::Int32, false),
        f("gone", DataType::Utf8, false),
    ]);
    let where_ = Fields::from(vec![
        f("lat", DataType::Float64, false),
        f("note", DataType::Utf8, true),
    ]);
    let meta = Fields::from(vec![
        f("source", DataType::Utf8, false),
        f("ts", DataType::Int64, false),
        f("where", DataType::Struct(where_), false),
    ]);
    let point = Fields::from(vec![
        f("a", DataType::Int32, false),
        f("b", DataType::Utf8, false),
    ]);
    assert_eq!(*fields[1], f("features", DataType::Struct(features), false));
    assert_eq!(*fields[2], f("meta", DataType::Struct(meta), true));
    assert_eq!(
        *fields[3],
        f(
            "points",
            DataType::List(Arc::new(f("item", DataType::Struct(point), false))),
            false
        )
    );

    let features = cols[1].as_struct();
    assert_eq!(
        features.column(1).as_primitive::<Int32Type>().values(),
        &[0, 10, 20, 30, 40, 50]
    );
    let x = features.column(0).as_list::<i32>();
    assert_eq!(x.value_offsets(), &[0, 0, 1, 3, 3, 4, 6]);
    assert_eq!(
        x.values().as_primitive::<Float32Type>().values(),
        &[0.5, 0.5, 1.5, 0.5, 0.5, 1.5]
    );
    let meta = cols[2].as_struct();
    assert_eq!(
        (0..6).map(|i| meta.is_valid(i)).collect::<Vec<_>>(),
        [true, false, true, true, false, true]
    );
    let source = meta.column(0).as_string::<i32>();
    assert_eq!(
        (source.value(0), source.value(2), source.value(1)),
        ("s0", "s2", "")
    );
    assert_eq!(
        meta.column(1).as_primitive::<Int64Type>().value(5),
        1_700_000_000_005
    );
    let where_ = meta.column(2).as_struct();
    assert_eq!(where_.column(0).as_primitive::<Float64Type>().value(3), 0.75);
    let note = where_.column(1).as_string::<i32>();
    assert_eq!(
        (note.is_null(0), note.value(3), note.is_null(1)),
        (true, "n", true)
    );
    let points = cols[3].as_list::<i32>();
    assert_eq!(points.value_offsets(), &[0, 0, 1, 3, 3, 4, 6]);
    let items = points.values().as_struct();
    assert_eq!(
        items.column(0).as_primitive::<Int32Type>().values(),
        &[0, 0, 1, 0, 0, 1]
    );
    assert_eq!(items.column(1).as_string::<i32>().value(2), "p1");
}

/// v1 values read with v2: a field added inside a nested record takes its default, a removed
/// one is skipped, a nested int is promoted; the plan and the general path agree.
#[test]
fn nested_records_resolve_across_schema_versions() {
    let messages: Vec<Vec<u8>> = (0..4).map(|i| nested_v1(i, i != 2, 2)).collect();
    let (cols, ok) = both_paths(NESTED_V2, NESTED_V1, &messages);
    assert!(ok.iter().all(|&o| o));
    let features = cols[1].as_struct();
    assert_eq!(features.num_columns(), 3);
    assert_eq!(
        features.column(1).as_primitive::<Int64Type>().values(),
        &[0, 10, 20, 30]
    );
    assert_eq!(
        features.column(2).as_primitive::<Float64Type>().values(),
        &[2.5; 4]
    );
    let items = cols[3].as_list::<i32>().values().as_struct().clone();
    assert_eq!(items.len(), 8);
    assert_eq!(items.column(2).null_count(), 8);
    // And v2 values read with v1 less `gone` (which has no default): `z` and `c` are skipped.
    let v2 = Schema::parse_str(NESTED_V2).unwrap();
    let v1_reader_without_gone = NESTED_V1
        .replace(
            r#",
        {"name": "gone", "type": "string"}"#,
            "",
        )
        .replace(
            r#"{"name": "y", "type": "int"}"#,
            r#"{"name": "y", "type": "long"}"#,
        );
    let value = apache_avro::from_avro_datum(
        &Schema::parse_str(NESTED_V1).unwrap(),
        &mut &messages[0][..],
        Some(&v2),
    )
    .unwrap();
    let body = to_avro_datum(&v2, value).unwrap();
    let (cols, ok) = both_paths(&v1_reader_without_gone, NESTED_V2, &[body]);
    assert_eq!(ok, [true]);
    assert_eq!(cols[1].as_struct().num_columns(), 2);
}

/// Corrupted nested values fail on both paths alike and leave no part of a row behind.
#[test]
fn corrupt_nested_values_fail_like_the_general_path() {
    let mut messages = Vec::new();
    for i in 0..200i64 {
        let mut m = nested_v1(i, i % 4 != 0, (i % 4) as usize);
        match i % 7 {
            3 => m.truncate(m.len() - 1 - (i as usize % 5).min(m.len() - 1)),
            4 => {
                let at = (i as usize * 13) % m.len();
                m[at] = 0xff;
            }
            5 => m.push(1),
            _ => {}
        }
        messages.push(m);
    }
    // Read with the writer's own schema: a plan skips a dropped string without checking its
    // UTF-8, where apache-avro checks it, so only kept fields can fail alike.
    let (cols, ok) = both_paths(NESTED_V1, NESTED_V1, &messages);
    let failed = ok.iter().filter(|o| !**o).count();
    assert!(failed >= 40, "{failed}");
    assert_eq!(cols[0].len(), 200 - failed);
}

#[test]
fn recursive_and_unsupported_records_are_named() {
    let recursive = r#"{"type": "record", "name": "Node", "fields": [
        {"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}]}"#;
    let e = AvroDecoder::new(recursive, &[], &[], None).err().unwrap();
    assert!(e.contains("field 'next': record 'Node' contains itself"), "{e}");
    let with_map = r#"{"type": "record", "name": "R", "fields": [
        {"name": "outer", "type": {"type": "record", "name": "O", "fields": [
            {"name": "m", "type": {"type": "map", "values": "long"}}]}}]}"#;
    let e = AvroDecoder::new(with_map, &[], &[], None).err().unwrap();
    assert!(e.contains("field 'outer.m': an Avro map is not supported"), "{e}");
}

/// A renamed field is found by the reader's alias (Avro's resolution rule).
#[test]
fn a_reader_alias_names_the_writer_field() {
    let reader = r#"{"type": "record", "name": "r", "fields": [
        {"name": "key", "aliases": ["id"], "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "double"}},
        {"name": "tag", "type": ["null", "string"]}]}"#;
    let mut d = AvroDecoder::new(reader, &[], &[(7, SCHEMA.to_string())], None).unwrap();
    let mut msg = vec![0, 0, 0, 0, 7];
    msg.extend(datum(42, Some("t")));
    d.decode(None, Some(&msg)).unwrap();
    assert_eq!(d.finish()[0].as_primitive::<Int64Type>().values(), &[42]);
}
