//! Property tests of every payload decoder (proptest):
//!
//! - arbitrary bytes, and valid encodings damaged (truncated, a byte flipped, bytes appended),
//!   never panic, and what a decoder hands out is always valid Arrow (`validate_full`) with one
//!   row per accepted message, the declared types, and no nulls in a non-nullable column;
//! - valid encodings written by a reference encoder (serde_json, apache-avro, prost-reflect, the
//!   tensor layout) decode to exactly the values encoded;
//! - decoding ahead on a second thread (`prepare`) changes nothing.
//!
//! `PROPTEST_CASES` sets the cases per property (256 by default; `make proptest-long` runs the
//! long campaign whose count the README gives).

use apache_avro::types::Value as AvroValue;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use kafka_ml::format::columns::ColumnSpec;
use kafka_ml::format::{Decoder, FormatSpec};
use proptest::prelude::*;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value as ProtoValue};
use std::sync::OnceLock;

/// A reference encoder of one format.
type Encode = dyn Fn(&Record) -> Vec<u8>;

/// One record as every format under test can carry it.
#[derive(Debug, Clone)]
struct Record {
    id: i64,
    x: [f32; 4],
    name: Option<String>,
    ok: bool,
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        prop::array::uniform4(any::<f32>().prop_filter("finite", |f| f.is_finite())),
        prop::option::of(any::<String>()),
        any::<bool>(),
    )
        .prop_map(|(id, x, name, ok)| Record { id, x, name, ok })
}

/// A message value: arbitrary bytes, or a valid encoding, damaged or not.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(usize),
    Flip(usize, u8),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Damage::Flip(i, b)),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
    ]
}

fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::None => {}
        Damage::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
        Damage::Flip(i, b) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= b;
        }
        Damage::Flip(..) => {}
        Damage::Append(extra) => bytes.extend_from_slice(extra),
    }
    bytes
}

/// Inputs for one batch: valid records (each possibly damaged) mixed with arbitrary bytes and
/// missing values.
#[derive(Debug, Clone)]
enum Input {
    Encoded(Record, Damage),
    Bytes(Vec<u8>),
    Tombstone,
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    let one = prop_oneof![
        6 => (record(), damage()).prop_map(|(r, d)| Input::Encoded(r, d)),
        2 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Input::Bytes),
        1 => Just(Input::Tombstone),
    ];
    prop::collection::vec(one, 0..24)
}

/// The values of the inputs for a format's `encode`, with which ones are valid and undamaged.
fn payloads<'a>(inputs: &'a [Input], encode: &Encode) -> Vec<(Option<Vec<u8>>, Option<&'a Record>)> {
    inputs
        .iter()
        .map(|input| match input {
            Input::Encoded(r, d) => {
                let undamaged = matches!(d, Damage::None);
                (Some(apply(encode(r), d)), undamaged.then_some(r))
            }
            Input::Bytes(b) => (Some(b.clone()), None),
            Input::Tombstone => (None, None),
        })
        .collect()
}

/// Feeds every payload (decoding ahead first when `ahead`), then checks the batch is valid Arrow
/// of the declared fields with one row per accepted message; returns the columns and, for each
/// accepted message, its input's undamaged record (if it was one).
fn decode_all<'a>(
    decoder: &mut dyn Decoder,
    payloads: &[(Option<Vec<u8>>, Option<&'a Record>)],
    ahead: bool,
) -> Result<(Vec<ArrayRef>, Vec<Option<&'a Record>>), TestCaseError> {
    if ahead && decoder.decodes_ahead() {
        let values: Vec<Option<&[u8]>> = payloads.iter().map(|(v, _)| v.as_deref()).collect();
        decoder.prepare(&values);
    }
    let mut accepted = Vec::new();
    for (value, record) in payloads {
        match decoder.decode(None, value.as_deref()) {
            Ok(()) => accepted.push(*record),
            Err(reason) => {
                prop_assert!(!reason.is_empty());
                // A valid, undamaged record is never refused.
                prop_assert!(record.is_none(), "a valid record was refused: {reason}");
            }
        }
    }
    if ahead {
        decoder.prepare(&[]);
    }
    let columns = decoder.finish();
    let fields = decoder.fields();
    prop_assert_eq!(fields.len(), columns.len());
    for (field, column) in fields.iter().zip(&columns) {
        column
            .to_data()
            .validate_full()
            .map_err(|e| TestCaseError::fail(format!("column '{}' is invalid Arrow: {e}", field.name())))?;
        prop_assert_eq!(column.len(), accepted.len(), "column '{}'", field.name());
        prop_assert_eq!(field.data_type(), column.data_type(), "column '{}'", field.name());
        if !field.is_nullable() {
            prop_assert_eq!(
                column.null_count(),
                0,
                "column '{}' is not nullable",
                field.name()
            );
        }
    }
    // The next batch starts empty.
    prop_assert!(decoder.finish().iter().all(|c| c.is_empty()));
    Ok((columns, accepted))
}

/// The decoded columns `id`, `x`, `name`, `ok` (in `fields` order) equal every undamaged
/// record's values; `x` is compared as `f32` (formats carrying it as doubles widen it exactly).
fn check_values(
    columns: &[ArrayRef],
    names: &[String],
    accepted: &[Option<&Record>],
) -> Result<(), TestCaseError> {
    let col = |name: &str| &columns[names.iter().position(|n| n == name).expect("column")];
    for (row, record) in accepted.iter().enumerate() {
        let Some(r) = record else { continue };
        prop_assert_eq!(col("id").as_primitive::<Int64Type>().value(row), r.id);
        let x = col("x");
        let values = match x.data_type() {
            arrow_schema::DataType::FixedSizeList(..) => x.as_fixed_size_list().value(row),
            _ => x.as_list::<i32>().value(row),
        };
        let got: Vec<f32> = match values.data_type() {
            arrow_schema::DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
            _ => values
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|v| *v as f32)
                .collect(),
        };
        prop_assert_eq!(got, r.x.to_vec());
        let name = col("name").as_string::<i32>();
        prop_assert_eq!(
            name.is_valid(row).then(|| name.value(row).to_owned()),
            r.name.clone()
        );
        prop_assert_eq!(col("ok").as_boolean().value(row), r.ok);
    }
    Ok(())
}

fn names(decoder: &dyn Decoder) -> Vec<String> {
    decoder.fields().iter().map(|f| f.name().clone()).collect()
}

fn json_columns() -> Vec<ColumnSpec> {
    [
        ("id", "int64"),
        ("x", "float32[4]"),
        ("name", "string?"),
        ("ok", "bool"),
    ]
    .iter()
    .map(|(n, d)| ColumnSpec::parse(n, d).expect("column"))
    .collect()
}

fn json_encode(r: &Record) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"id": r.id, "x": r.x, "name": r.name, "ok": r.ok, "extra": [1, {}]}),
    )
    .expect("json")
}

const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "R", "fields": [
    {"name": "id", "type": "long"},
    {"name": "x", "type": {"type": "array", "items": "float"}},
    {"name": "name", "type": ["null", "string"]},
    {"name": "ok", "type": "boolean"}]}"#;

fn avro_schema() -> &'static apache_avro::Schema {
    static SCHEMA: OnceLock<apache_avro::Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| apache_avro::Schema::parse_str(AVRO_SCHEMA).expect("schema"))
}

fn avro_encode(r: &Record) -> Vec<u8> {
    let value = AvroValue::Record(vec![
        ("id".into(), AvroValue::Long(r.id)),
        (
            "x".into(),
            AvroValue::Array(r.x.iter().map(|f| AvroValue::Float(*f)).collect()),
        ),
        (
            "name".into(),
            match &r.name {
                None => AvroValue::Union(0, Box::new(AvroValue::Null)),
                Some(s) => AvroValue::Union(1, Box::new(AvroValue::String(s.clone()))),
            },
        ),
        ("ok".into(), AvroValue::Boolean(r.ok)),
    ]);
    apache_avro::to_avro_datum(avro_schema(), value).expect("avro")
}

const PROTO: &str = r#"syntax = "proto3";
package prop;
message R {
  int64 id = 1;
  repeated float x = 2;
  optional string name = 3;
  bool ok = 4;
}
"#;

fn proto_message() -> MessageDescriptor {
    static MESSAGE: OnceLock<MessageDescriptor> = OnceLock::new();
    MESSAGE
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("kafka-ml-prop-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::write(dir.join("prop.proto"), PROTO).expect("write .proto");
            let pool = protox::compile(["prop.proto"], [&dir]).expect("compile .proto");
            let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(pool).expect("pool");
            pool.get_message_by_name("prop.R").expect("message")
        })
        .clone()
}

fn proto_encode(r: &Record) -> Vec<u8> {
    let mut m = DynamicMessage::new(proto_message());
    m.set_field_by_name("id", ProtoValue::I64(r.id));
    m.set_field_by_name(
        "x",
        ProtoValue::List(r.x.iter().map(|f| ProtoValue::F32(*f)).collect()),
    );
    if let Some(name) = &r.name {
        m.set_field_by_name("name", ProtoValue::String(name.clone()));
    }
    m.set_field_by_name("ok", ProtoValue::Bool(r.ok));
    prost::Message::encode_to_vec(&m.transcode_to_dynamic())
}

fn tensor_encode(r: &Record) -> Vec<u8> {
    r.x.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn cases() -> ProptestConfig {
    // `PROPTEST_CASES` (read by proptest itself) overrides the default 256 cases.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn json_decodes_valid_records_exactly_and_survives_anything(inputs in inputs(), ahead in any::<bool>()) {
        let mut decoder = FormatSpec::Json { columns: json_columns() }.decoder().expect("decoder");
        let payloads = payloads(&inputs, &json_encode);
        let (columns, accepted) = decode_all(decoder.as_mut(), &payloads, ahead)?;
        check_values(&columns, &names(decoder.as_ref()), &accepted)?;
    }

    #[test]
    fn avro_decodes_valid_records_exactly_and_survives_anything(inputs in inputs(), ahead in any::<bool>()) {
        let spec = FormatSpec::Avro {
            schema: AVRO_SCHEMA.to_owned(),
            named: vec![],
            registry_schemas: vec![],
            registry: None,
        };
        let mut decoder = spec.decoder().expect("decoder");
        let payloads = payloads(&inputs, &avro_encode);
        let (columns, accepted) = decode_all(decoder.as_mut(), &payloads, ahead)?;
        check_values(&columns, &names(decoder.as_ref()), &accepted)?;
    }

    #[test]
    fn protobuf_decodes_valid_records_exactly_and_survives_anything(inputs in inputs(), ahead in any::<bool>()) {
        let mut decoder = FormatSpec::Protobuf { message: proto_message(), registry: None }
            .decoder()
            .expect("decoder");
        let payloads = payloads(&inputs, &proto_encode);
        let (columns, accepted) = decode_all(decoder.as_mut(), &payloads, ahead)?;
        check_values(&columns, &names(decoder.as_ref()), &accepted)?;
    }

    #[test]
    fn tensor_decodes_rows_of_the_right_size_exactly(inputs in inputs()) {
        let mut decoder = FormatSpec::Tensor { dtype: kafka_ml::format::columns::ScalarType::Float32, shape: vec![4] }
            .decoder()
            .expect("decoder");
        let payloads = payloads(&inputs, &tensor_encode);
        let (columns, accepted) = decode_all(decoder.as_mut(), &payloads, false)?;
        // Every value of exactly 16 bytes is a row (a damaged one too): the layout has no framing.
        let sixteen = payloads.iter().filter(|(v, _)| v.as_ref().is_some_and(|v| v.len() == 16)).count();
        prop_assert_eq!(accepted.len(), sixteen);
        let rows = columns[0].as_fixed_size_list();
        for (row, record) in accepted.iter().enumerate() {
            if let Some(r) = record {
                let got = rows.value(row);
                prop_assert_eq!(got.as_primitive::<Float32Type>().values().to_vec(), r.x.to_vec());
            }
        }
    }

    #[test]
    fn debezium_and_json_schema_and_raw_survive_anything(inputs in inputs()) {
        let columns = json_columns();
        let specs = [
            FormatSpec::Debezium { columns: columns.clone() },
            FormatSpec::JsonSchema { columns, registry: None },
            FormatSpec::Raw,
        ];
        for spec in specs {
            let mut decoder = spec.decoder().expect("decoder");
            // Raw bytes and JSON records alike; no value is known-valid for these formats here.
            let payloads: Vec<(Option<Vec<u8>>, Option<&Record>)> =
                payloads(&inputs, &json_encode).into_iter().map(|(v, _)| (v, None)).collect();
            decode_all(decoder.as_mut(), &payloads, true)?;
        }
    }
}

#[test]
fn the_reference_encodings_are_what_the_decoders_read() {
    // A fixed record through each format, so a property that accepted nothing would still show.
    let r = Record {
        id: -7,
        x: [0.5, -1.25, 3.0, 1e-3],
        name: Some("ß ☃".into()),
        ok: true,
    };
    let specs: [(FormatSpec, &Encode); 3] = [
        (
            FormatSpec::Json {
                columns: json_columns(),
            },
            &json_encode,
        ),
        (
            FormatSpec::Avro {
                schema: AVRO_SCHEMA.to_owned(),
                named: vec![],
                registry_schemas: vec![],
                registry: None,
            },
            &avro_encode,
        ),
        (
            FormatSpec::Protobuf {
                message: proto_message(),
                registry: None,
            },
            &proto_encode,
        ),
    ];
    for (spec, encode) in specs {
        let mut decoder = spec.decoder().expect("decoder");
        let payloads = vec![(Some(encode(&r)), Some(&r))];
        let (columns, accepted) = decode_all(decoder.as_mut(), &payloads, false).expect("decode");
        assert_eq!(accepted.len(), 1, "{spec:?}");
        check_values(&columns, &names(decoder.as_ref()), &accepted).expect("values");
    }
}
