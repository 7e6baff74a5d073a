use super::*;
use crate::format::{Decoder, ProtoSource, ProtobufDecoder};
use arrow_array::{Float32Array, Int64Array, ListArray, StringArray, TimestampMicrosecondArray};
use std::sync::Arc;

const PROTO: &str = r#"
    syntax = "proto3";
    import "google/protobuf/timestamp.proto";
    message Reading {
        int64 id = 1;
        repeated float x = 2;
        Kind kind = 3;
        google.protobuf.Timestamp ts = 4;
        optional string note = 5;
        enum Kind { KIND_UNSPECIFIED = 0; KIND_A = 1; }
    }
"#;

const EVERY_SHAPE: &str = r#"
    syntax = "proto3";
    package t;
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/wrappers.proto";
    message All {
        int32 i32 = 1; int64 i64 = 2; uint32 u32 = 3; uint64 u64 = 4;
        sint32 s32 = 5; sint64 s64 = 6; fixed32 fx32 = 7; fixed64 fx64 = 8;
        sfixed32 sf32 = 9; sfixed64 sf64 = 10;
        float fl = 11; float fl_wide = 12; float fl_int = 13; double db = 14; double db_int = 15;
        bool ok = 16; string name = 17; bytes blob = 18;
        Color color = 19; Color color_n = 20;
        optional int64 opt = 21; optional string opt_s = 22;
        repeated float xs = 23; repeated double ds = 24; repeated int64 ids = 25;
        repeated sint32 zs = 26; repeated fixed64 fxs = 27; repeated bool flags = 28;
        repeated Color colors = 29; repeated string tags = 30; repeated bytes blobs = 31;
        Inner inner = 32; repeated Inner inners = 33;
        google.protobuf.Timestamp ts = 34; google.protobuf.Timestamp ts_s = 35;
        google.protobuf.Int64Value w_i = 36; google.protobuf.StringValue w_s = 37;
        google.protobuf.BoolValue w_b = 38; google.protobuf.FloatValue w_f = 39;
        map<string, double> weights = 40; map<int64, Inner> by_id = 41;
        oneof choice { string pick_s = 43; int64 pick_i = 44; }
        repeated google.protobuf.Timestamp times = 45;
        int32 far = 536870911;
        enum Color { COLOR_UNSPECIFIED = 0; RED = 1; BLUE = -2; }
    }
    message Inner { int32 a = 1; string b = 2; repeated uint32 c = 3; Deep deep = 4; }
    message Deep { double z = 1; }
"#;

/// Columns for every shape the plan writes, in an order unlike the field numbers, with
/// zeros (left out without presence), extremes, nulls, and values over 127 bytes (whose
/// length takes two bytes).
fn every_shape(n: usize) -> RecordBatch {
    use arrow_array::builder::*;
    use arrow_array::*;
    use arrow_buffer::NullBuffer;
    use arrow_schema::Field;
    let long = |i: usize| "é".repeat(i % 7 * 30);
    fn pick(i: usize, v: i64) -> i64 {
        if i % 5 == 0 {
            0
        } else {
            v
        }
    }
    let ints = |f: fn(usize) -> i64| Int64Array::from_iter_values((0..n).map(f));
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        (
            "far",
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32 - 3))),
        ),
        (
            "i32",
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| match i % 4 {
                0 => 0,
                1 => i32::MIN,
                2 => -(i as i32),
                _ => i as i32 * 1000,
            }))),
        ),
        ("i64", Arc::new(ints(|i| pick(i, i64::MAX - i as i64)))),
        (
            "u32",
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| pick(i, u32::MAX as i64 - i as i64)),
            )),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from_iter_values((0..n).map(|i| {
                if i % 3 == 0 {
                    u64::MAX
                } else {
                    i as u64
                }
            }))),
        ),
        (
            "s32",
            Arc::new(Int16Array::from_iter_values((0..n).map(|i| i as i16 * -7))),
        ),
        ("s64", Arc::new(ints(|i| pick(i, i64::MIN + i as i64)))),
        (
            "fx32",
            Arc::new(UInt8Array::from_iter_values((0..n).map(|i| i as u8))),
        ),
        ("fx64", Arc::new(ints(|i| pick(i, i as i64 * 1_000_000_007)))),
        (
            "sf32",
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| -(i as i32)))),
        ),
        ("sf64", Arc::new(ints(|i| pick(i, -(i as i64) << 40)))),
        (
            "fl",
            Arc::new(Float32Array::from_iter_values((0..n).map(|i| match i % 4 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::NAN,
                _ => i as f32 / 3.0,
            }))),
        ),
        (
            "fl_wide",
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 / 7.0))),
        ),
        (
            "fl_int",
            Arc::new(ints(|i| pick(i, (1 << 40) + i as i64 * 12_345))),
        ),
        (
            "db",
            Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32 * -0.25))),
        ),
        (
            "db_int",
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32 - 100))),
        ),
        (
            "ok",
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 1)))),
        ),
        (
            "name",
            Arc::new(LargeStringArray::from_iter_values((0..n).map(long))),
        ),
        (
            "blob",
            Arc::new(BinaryArray::from_iter_values(
                (0..n).map(|i| vec![i as u8; i % 3 * 70]),
            )),
        ),
        (
            "color",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| ["COLOR_UNSPECIFIED", "RED", "BLUE"][i % 3]),
            )),
        ),
        (
            "color_n",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| [0, 1, -2][i % 3]))),
        ),
        (
            "opt",
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 3 != 0).then_some(i as i64 % 2)),
            )),
        ),
        (
            "opt_s",
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 4 != 0).then(|| long(i))),
            )),
        ),
        (
            "xs",
            Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>((0..n).map(
                |i| (i % 6 != 5).then(|| (0..i % 40).map(|k| Some(k as f32 - 0.5)).collect::<Vec<_>>()),
            ))),
        ),
        (
            "ids",
            Arc::new(LargeListArray::from_iter_primitive::<Int64Type, _, _>(
                (0..n).map(|i| {
                    Some(
                        (0..i % 50)
                            .map(|k| Some(k as i64 * -99_999 * i as i64))
                            .collect::<Vec<_>>(),
                    )
                }),
            )),
        ),
        (
            "zs",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>((0..n).map(
                |i| Some((0..i % 5).map(|k| Some(k as i32 - 2)).collect::<Vec<_>>()),
            ))),
        ),
        (
            "fxs",
            Arc::new(ListArray::from_iter_primitive::<UInt64Type, _, _>((0..n).map(
                |i| Some((0..i % 4).map(|k| Some(u64::MAX - k as u64)).collect::<Vec<_>>()),
            ))),
        ),
        ("flags", {
            let mut b = ListBuilder::new(BooleanBuilder::new());
            for i in 0..n {
                for k in 0..i % 3 {
                    b.values().append_value(k % 2 == 0);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        }),
        ("colors", {
            let mut b = ListBuilder::new(StringBuilder::new());
            for i in 0..n {
                for k in 0..i % 4 {
                    b.values()
                        .append_value(["RED", "BLUE", "COLOR_UNSPECIFIED"][k % 3]);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        }),
        ("tags", {
            let mut b = ListBuilder::new(StringBuilder::new());
            for i in 0..n {
                for k in 0..i % 3 {
                    b.values().append_value(long(i + k));
                }
                b.append(i % 7 != 0);
            }
            Arc::new(b.finish())
        }),
        ("blobs", {
            let mut b = ListBuilder::new(BinaryBuilder::new());
            for i in 0..n {
                for k in 0..i % 3 {
                    b.values().append_value(vec![k as u8; i % 4]);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        }),
    ];
    // ds: a sliced fixed-size list (its values start at an offset)
    let mut ds = FixedSizeListBuilder::new(Float64Builder::new(), 3);
    for i in 0..=n {
        ds.values().append_slice(&[i as f64, -1.5, 0.0]);
        ds.append(true);
    }
    cols.push(("ds", Arc::new(ds.finish().slice(1, n))));
    let deep = |n: usize| -> ArrayRef {
        Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("z", DataType::Float64, false)),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 - 1.0))) as ArrayRef,
        )]))
    };
    let inner = |n: usize, nulls: Option<NullBuffer>| -> StructArray {
        let mut c = ListBuilder::new(UInt32Builder::new());
        for i in 0..n {
            c.values().append_slice(&(0..i as u32 % 3).collect::<Vec<_>>());
            c.append(true);
        }
        let c = c.finish();
        let fields = vec![
            Field::new("b", DataType::Utf8, true),
            Field::new("a", DataType::Int64, true),
            Field::new("c", c.data_type().clone(), true),
            Field::new("deep", deep(1).data_type().clone(), true),
            Field::new("unknown", DataType::Int64, true),
        ];
        StructArray::try_new(
            fields.into(),
            vec![
                Arc::new(StringArray::from_iter_values((0..n).map(long))),
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i as i64 % 3))),
                Arc::new(c),
                deep(n),
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ],
            nulls,
        )
        .unwrap()
    };
    cols.push((
        "inner",
        Arc::new(inner(n, Some(NullBuffer::from_iter((0..n).map(|i| i % 4 != 3))))),
    ));
    let inners = inner(n * 2, None);
    let offsets = arrow_buffer::OffsetBuffer::from_lengths((0..n).map(|i| i % 3));
    let tail = offsets.last().copied().unwrap() as usize;
    cols.push((
        "inners",
        Arc::new(
            ListArray::try_new(
                Arc::new(Field::new("item", inners.data_type().clone(), false)),
                offsets,
                Arc::new(inners.slice(0, tail)),
                None,
            )
            .unwrap(),
        ),
    ));
    cols.push((
        "ts",
        Arc::new(
            TimestampNanosecondArray::from_iter((0..n).map(|i| {
                (i % 5 != 4).then_some(pick(i, 1_700_000_000_123_456_789 - i as i64 * 1_000_000_001))
            }))
            .with_timezone("UTC"),
        ),
    ));
    cols.push((
        "ts_s",
        Arc::new(TimestampSecondArray::from_iter_values(
            (0..n).map(|i| i as i64 - 150),
        )),
    ));
    cols.push((
        "w_i",
        Arc::new(Int64Array::from_iter(
            (0..n).map(|i| (i % 3 != 2).then_some(i as i64 % 2)),
        )),
    ));
    cols.push((
        "w_s",
        Arc::new(StringArray::from_iter(
            (0..n).map(|i| (i % 3 != 2).then(|| long(i))),
        )),
    ));
    cols.push((
        "w_b",
        Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
    ));
    cols.push((
        "w_f",
        Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 % 2.0))),
    ));
    let mut weights = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
    for i in 0..n {
        // One entry at most: prost-reflect writes entries in its hash map's order.
        if i % 3 == 0 {
            weights.keys().append_value(long(i));
            weights.values().append_option((i % 2 == 0).then_some(i as f64));
        }
        weights.append(i % 5 != 4).unwrap();
    }
    cols.push(("weights", Arc::new(weights.finish())));
    let entries = inner(n, None);
    let keys = Int64Array::from_iter_values((0..n).map(|i| pick(i, i as i64 - 7)));
    let by_id = MapArray::try_new(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("keys", DataType::Int64, false),
                    Field::new("values", entries.data_type().clone(), false),
                ]
                .into(),
            ),
            false,
        )),
        arrow_buffer::OffsetBuffer::from_lengths((0..n).map(|i| usize::from(i % 2 == 0))),
        StructArray::try_new(
            vec![
                Field::new("keys", DataType::Int64, false),
                Field::new("values", entries.data_type().clone(), false),
            ]
            .into(),
            vec![
                Arc::new(keys.slice(0, n.div_ceil(2))),
                Arc::new(entries.slice(0, n.div_ceil(2))),
            ],
            None,
        )
        .unwrap(),
        None,
        false,
    )
    .unwrap();
    cols.push(("by_id", Arc::new(by_id)));
    cols.push((
        "pick_s",
        Arc::new(StringArray::from_iter(
            (0..n).map(|i| (i % 3 != 0).then(|| long(i % 2))),
        )),
    ));
    cols.push((
        "times",
        Arc::new(ListArray::new(
            Arc::new(Field::new(
                "item",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            )),
            arrow_buffer::OffsetBuffer::from_lengths((0..n).map(|i| i % 3)),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (0..n * 2).map(|i| i as i64 * 999 - 5000),
            )),
            None,
        )),
    ));
    cols.push(("not_a_field", Arc::new(Int64Array::from_iter_values(0..n as i64))));
    cols.reverse();
    RecordBatch::try_from_iter(cols).unwrap()
}

/// The compiled plan writes byte for byte what prost-reflect writes from a
/// `DynamicMessage` of the same values (the general path), for every shape it covers.
#[test]
fn planned_rows_are_the_bytes_prost_reflect_writes() {
    let message =
        crate::format::protobuf::load_message(&ProtoSource::Text(EVERY_SHAPE.into()), Some("t.All")).unwrap();
    let batch = every_shape(300);
    let schema = batch.schema();
    let named = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .zip(batch.columns())
    };
    for (n, c) in named() {
        assert!(
            plan::MessagePlan::compile(&message, std::iter::once((n, c))).is_some(),
            "column {n}"
        );
    }
    let plan = plan::MessagePlan::compile(&message, named()).expect("a plan for every shape");
    let columns: Vec<_> = named()
        .filter_map(|(n, c)| Some((n, c, message.get_field_by_name(n)?)))
        .collect();
    assert_eq!(columns.len(), batch.num_columns() - 1);
    let header = [WIRE_MAGIC, 0, 0, 1, 2, 2, 4, 6];
    let planned = encode_planned(&plan, &header, batch.num_rows()).unwrap();
    let general = encode_general(&message, &columns, &header, batch.num_rows()).unwrap();
    let mut long_rows = 0;
    for row in 0..batch.num_rows() {
        assert_eq!(planned.row(row), general.row(row), "row {row}");
        long_rows += usize::from(planned.row(row).unwrap().len() > 1000);
    }
    assert!(long_rows > 10, "long values exercise two-byte lengths");
    // The public entry point takes the plan (same bytes), and sliced input works too.
    let sliced = batch.slice(7, 100);
    let rows = encode_protobuf(&sliced, &message, None).unwrap();
    for row in 0..100 {
        assert_eq!(
            rows.row(row),
            Some(&general.row(row + 7).unwrap()[header.len()..])
        );
    }
}

/// Maps of several entries (written in column order by the plan, in hash order by
/// prost-reflect) decode to the same messages.
#[test]
fn planned_maps_decode_alike() {
    use arrow_array::builder::{Float64Builder, MapBuilder, StringBuilder};
    let message =
        crate::format::protobuf::load_message(&ProtoSource::Text(EVERY_SHAPE.into()), Some("t.All")).unwrap();
    let mut weights = MapBuilder::new(None, StringBuilder::new(), Float64Builder::new());
    for i in 0..50 {
        for k in 0..i % 6 {
            weights.keys().append_value(format!("k{k}"));
            weights.values().append_value(k as f64 * 0.5);
        }
        weights.append(true).unwrap();
    }
    let batch = RecordBatch::try_from_iter([("weights", Arc::new(weights.finish()) as ArrayRef)]).unwrap();
    let column = batch.column(0);
    let plan = plan::MessagePlan::compile(&message, std::iter::once(("weights", column))).unwrap();
    let planned = encode_planned(&plan, &[], 50).unwrap();
    let field = message.get_field_by_name("weights").unwrap();
    let general = encode_general(&message, &[("weights", column, field)], &[], 50).unwrap();
    for row in 0..50 {
        let a = DynamicMessage::decode(message.clone(), planned.row(row).unwrap()).unwrap();
        let b = DynamicMessage::decode(message.clone(), general.row(row).unwrap()).unwrap();
        assert_eq!(a, b, "row {row}");
    }
}

/// Input the plan cannot write goes to the general path, which names column and row.
#[test]
fn unplanned_input_keeps_the_general_path() {
    let message =
        crate::format::protobuf::load_message(&ProtoSource::Text(EVERY_SHAPE.into()), Some("t.All")).unwrap();
    let bad = [
        (
            "i32",
            Arc::new(Int64Array::from(vec![1, 1 << 40])) as ArrayRef,
            "is out of range",
        ),
        (
            "i64",
            Arc::new(Float32Array::from(vec![1.0, 1.5])) as ArrayRef,
            "1.5 is not an integer",
        ),
        (
            "color",
            Arc::new(StringArray::from(vec!["RED", "GREEN"])) as ArrayRef,
            "'GREEN' is not a value",
        ),
        (
            "color_n",
            Arc::new(Int64Array::from(vec![1, 7])) as ArrayRef,
            "7 is not a value",
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            "null, but field 'i64'",
        ),
        (
            "xs",
            Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>([
                Some(vec![Some(1.0)]),
                Some(vec![None]),
            ])) as ArrayRef,
            "list element 0 is null",
        ),
    ];
    for (name, column, what) in bad {
        let batch = RecordBatch::try_from_iter([(name, column)]).unwrap();
        let err = encode_protobuf(&batch, &message, None).unwrap_err();
        assert!(err.starts_with(&format!("column '{name}' row 1: ")), "{err}");
        assert!(err.contains(what), "{err}");
    }
    // Two columns on one oneof: the last one set in each row wins, as before.
    let both = RecordBatch::try_from_iter([
        (
            "pick_i",
            Arc::new(Int64Array::from(vec![Some(5), Some(6)])) as ArrayRef,
        ),
        (
            "pick_s",
            Arc::new(StringArray::from(vec![Some("s"), None])) as ArrayRef,
        ),
    ])
    .unwrap();
    let schema = both.schema();
    let named = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .zip(both.columns());
    assert!(plan::MessagePlan::compile(&message, named).is_none());
    let rows = encode_protobuf(&both, &message, None).unwrap();
    assert_eq!(rows.row(0), Some(&[0xda, 2, 1, b's'][..]));
    assert_eq!(rows.row(1), Some(&[0xe0, 2, 6][..]));
}

/// proto2: repeated scalars are not packed, and optional fields are written when set,
/// default or not.
#[test]
fn planned_proto2_rows_are_the_bytes_prost_reflect_writes() {
    let proto = r#"syntax = "proto2";
        message M { repeated int32 xs = 1; optional int64 n = 2; repeated float fs = 3 [packed = true]; }"#;
    let message = crate::format::protobuf::load_message(&ProtoSource::Text(proto.into()), None).unwrap();
    let batch = RecordBatch::try_from_iter([
        (
            "xs",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>([
                Some(vec![Some(1), Some(-1), Some(0)]),
                None,
            ])) as ArrayRef,
        ),
        ("n", Arc::new(Int64Array::from(vec![Some(0), None])) as ArrayRef),
        (
            "fs",
            Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>([
                Some(vec![Some(1.0)]),
                None,
            ])) as ArrayRef,
        ),
    ])
    .unwrap();
    let schema = batch.schema();
    let named = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .zip(batch.columns())
    };
    let plan = plan::MessagePlan::compile(&message, named()).unwrap();
    let columns: Vec<_> = named()
        .map(|(n, c)| (n, c, message.get_field_by_name(n).unwrap()))
        .collect();
    let planned = encode_planned(&plan, &[], 2).unwrap();
    let general = encode_general(&message, &columns, &[], 2).unwrap();
    for row in 0..2 {
        assert_eq!(planned.row(row), general.row(row), "row {row}");
    }
    assert_eq!(&planned.row(0).unwrap()[..4], &[8, 1, 8, 0xff]);
}

#[test]
fn wrappers_are_nullable_scalars() {
    let proto = r#"syntax = "proto3"; import "google/protobuf/wrappers.proto";
        message M { google.protobuf.Int64Value n = 1; map<string, double> w = 2; }"#;
    let message = crate::format::protobuf::load_message(&ProtoSource::Text(proto.into()), None).unwrap();
    let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None]));
    let batch = RecordBatch::try_from_iter([("n", n)]).unwrap();
    let rows = encode_protobuf(&batch, &message, None).unwrap();
    let mut decoder = ProtobufDecoder::new(message, None).unwrap();
    assert_eq!(decoder.fields()[0].data_type(), &DataType::Int64);
    assert!(matches!(decoder.fields()[1].data_type(), DataType::Map(_, _)));
    decoder.decode(None, rows.row(0)).unwrap();
    decoder.decode(None, rows.row(1)).unwrap();
    let cols = decoder.finish();
    assert_eq!(cols[0].as_primitive::<Int64Type>().value(0), 5);
    assert!(cols[0].is_null(1));
    assert_eq!(cols[1].as_map().value_offsets(), &[0, 0, 0]);
}

#[test]
fn rows_encode_and_decode_back() {
    let message = crate::format::protobuf::load_message(&ProtoSource::Text(PROTO.into()), None).unwrap();
    let x =
        ListArray::from_iter_primitive::<Float32Type, _, _>([Some(vec![Some(1.0), Some(2.5)]), Some(vec![])]);
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, -2])) as ArrayRef),
        ("x", Arc::new(x) as ArrayRef),
        (
            "kind",
            Arc::new(StringArray::from(vec!["KIND_A", "KIND_UNSPECIFIED"])) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_000_001, -1]).with_timezone("UTC"))
                as ArrayRef,
        ),
        (
            "note",
            Arc::new(StringArray::from(vec![Some("n"), None])) as ArrayRef,
        ),
        (
            "ignored",
            Arc::new(Float32Array::from(vec![0.0, 0.0])) as ArrayRef,
        ),
    ])
    .unwrap();
    let rows = encode_protobuf(&batch, &message, Some(7)).unwrap();
    assert_eq!(&rows.row(0).unwrap()[..6], &[0, 0, 0, 0, 7, 0]);
    let plain = encode_protobuf(&batch, &message, None).unwrap();
    let mut decoder = ProtobufDecoder::new(message.clone(), None).unwrap();
    for i in 0..2 {
        decoder.decode(None, plain.row(i)).unwrap();
    }
    let cols = decoder.finish();
    assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, -2]);
    assert_eq!(cols[1].as_list::<i32>().value_offsets(), &[0, 2, 2]);
    assert_eq!(cols[2].as_string::<i32>().value(0), "KIND_A");
    let ts = cols[3].as_primitive::<TimestampNanosecondType>();
    assert_eq!(ts.values(), &[1_700_000_000_000_001_000, -1_000]);
    assert!(cols[4].is_null(1));

    let bad = RecordBatch::try_from_iter([(
        "kind",
        Arc::new(StringArray::from(vec!["KIND_A", "KIND_Z"])) as ArrayRef,
    )])
    .unwrap();
    let err = encode_protobuf(&bad, &message, None).unwrap_err();
    assert!(
        err.starts_with("column 'kind' row 1: 'KIND_Z' is not a value of enum"),
        "{err}"
    );
    let null_id =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![None, Some(1)])) as ArrayRef)])
            .unwrap();
    assert!(encode_protobuf(&null_id, &message, None)
        .unwrap_err()
        .contains("column 'id' row 0: null"));
}
