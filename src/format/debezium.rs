//! `debezium`: Debezium change events (JSON, with or without Connect's embedded schema) decoded
//! into the changed row's declared columns plus the operation and source position.
//!
//! A change event is `{"before": {...}, "after": {...}, "op": "c", "source": {...}, ...}`, or
//! that object under `"payload"` next to a `"schema"` when the JSON converter embeds schemas.
//! The row comes from `after` (create `c`, snapshot read `r`, update `u`) or, for a delete `d`,
//! from `before`. Three columns follow the row's: `__op`, `__source_ts_ms` (when the change was
//! made in the database) and `__lsn` (the PostgreSQL log position; null for other databases),
//! named as Debezium's own `ExtractNewRecordState` transform names its added fields.
//!
//! Debezium's encodings of column types map onto the declared types like this:
//! - numbers, booleans and text arrive as JSON numbers, booleans and strings and are narrowed
//!   with the same range checks as the `json` format;
//! - `numeric`/`decimal` in Debezium's default `precise` mode arrive as base64 big-endian
//!   unscaled integers whose scale is only in the embedded schema: with the schema they decode
//!   into a float column (correctly rounded), an integer column (when integral) or a string
//!   column (exact decimal text); without it they are refused, naming the settings that fix it.
//!   The variable-scale form `{"scale": s, "value": base64}` carries its own scale;
//! - temporal types stay the numbers Debezium sends: a `timestamp` column is epoch microseconds
//!   (`io.debezium.time.MicroTimestamp`), `date` is days since the epoch, `timestamptz` is an
//!   ISO-8601 string; declare `int64`/`int32`/`string` respectively;
//! - `bytea` (and any Connect `bytes` field) arrives base64-encoded and decodes into a `binary`
//!   column.
//!
//! Tombstones (the null-valued message Debezium writes after a delete so that compaction can
//! drop the key) produce no row: the batch builder counts them (`tombstones` in the reader's
//! stats), see `Decoder::skips_tombstones`.

use super::json;
use super::Decoder;
use crate::error::{Error, Result};
use crate::format::columns::{ColumnBuilder, ColumnSpec, Num, ScalarType, Shape};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use base64::Engine;
use simd_json::prelude::{TypedValue, ValueAsScalar};
use simd_json::tape::{Object, Value};
use simd_json::{Buffers, Tape, ValueType};

/// Names of the columns added after the row's own.
pub const OP_COLUMN: &str = "__op";
pub const SOURCE_TS_COLUMN: &str = "__source_ts_ms";
pub const LSN_COLUMN: &str = "__lsn";

const DECIMAL_SCHEMA_NAME: &str = "org.apache.kafka.connect.data.Decimal";

pub struct DebeziumDecoder {
    row: Vec<ColumnBuilder>,
    op: ColumnBuilder,
    source_ts_ms: ColumnBuilder,
    lsn: ColumnBuilder,
    /// simd-json parses in place: each payload is copied into this reused buffer first.
    scratch: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    rows: usize,
}

impl DebeziumDecoder {
    pub fn new(columns: Vec<ColumnSpec>) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::Config(
                "the debezium format needs the row's columns as its schema".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for c in &columns {
            if [OP_COLUMN, SOURCE_TS_COLUMN, LSN_COLUMN].contains(&c.name.as_str()) {
                return Err(Error::Config(format!(
                    "column '{}' clashes with a column the debezium format adds ({OP_COLUMN}, \
                     {SOURCE_TS_COLUMN}, {LSN_COLUMN})",
                    c.name
                )));
            }
            if !names.insert(c.name.as_str()) {
                return Err(Error::Config(format!("column '{}' is declared twice", c.name)));
            }
        }
        let spec = |name: &str, decl: &str| ColumnSpec::parse(name, decl).map_err(Error::Config);
        Ok(DebeziumDecoder {
            row: columns.into_iter().map(ColumnBuilder::new).collect(),
            op: ColumnBuilder::new(spec(OP_COLUMN, "string")?),
            source_ts_ms: ColumnBuilder::new(spec(SOURCE_TS_COLUMN, "int64?")?),
            lsn: ColumnBuilder::new(spec(LSN_COLUMN, "int64?")?),
            scratch: Vec::new(),
            buffers: Buffers::default(),
            tape: Some(Tape::null()),
            rows: 0,
        })
    }

    fn all_columns(&mut self) -> impl Iterator<Item = &mut ColumnBuilder> {
        self.row
            .iter_mut()
            .chain([&mut self.op, &mut self.source_ts_ms, &mut self.lsn])
    }

    fn decode_event(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        self.scratch.clear();
        self.scratch.extend_from_slice(value);
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape)
            .map_err(|e| format!("malformed JSON: {e}"))
            .and_then(|()| {
                append_event(
                    &mut self.row,
                    [&mut self.op, &mut self.source_ts_ms, &mut self.lsn],
                    tape.as_value(),
                )
            });
        self.tape = Some(tape.reset());
        result
    }
}

fn append_event(
    row: &mut [ColumnBuilder],
    [op_col, ts_col, lsn_col]: [&mut ColumnBuilder; 3],
    parsed: Value<'_, '_>,
) -> std::result::Result<(), String> {
    let Some(root) = parsed.as_object() else {
        return Err(format!(
            "expected a change event object, got {}",
            json::kind(&parsed)
        ));
    };
    // With the JSON converter's `schemas.enable=true` the event sits under "payload".
    let (event, schema) = match (root.get("payload"), root.get("schema")) {
        (Some(payload), Some(schema)) => (payload, Some(schema)),
        _ => (parsed, None),
    };
    let Some(event) = event.as_object() else {
        return Err(format!(
            "expected a change event object as payload, got {}",
            json::kind(&event)
        ));
    };
    let op_value = event.get("op");
    let Some(op) = op_value.as_ref().and_then(|v| v.as_str()) else {
        return Err(
            "not a Debezium change event: it has no 'op' field (events flattened by the \
                    ExtractNewRecordState transform are plain rows: read them with format='json')"
                .into(),
        );
    };
    let image = match op {
        "c" | "r" | "u" => "after",
        "d" => "before",
        "t" => return Err("a truncate event ('op': 't') has no row".into()),
        other => return Err(format!("unknown change event operation 'op': '{other}'")),
    };
    let Some(values) = event.get(image).and_then(|v| v.as_object()) else {
        return Err(format!("event with 'op': '{op}' has no '{image}' row image"));
    };
    let fields = schema.and_then(|s| row_field_schemas(&s, image));
    for col in row.iter_mut() {
        let field_schema = fields.as_ref().and_then(|f| field_schema(f, &col.spec.name));
        match values.get(col.spec.name.as_str()) {
            Some(v) if v.value_type() != ValueType::Null => append_value(col, &v, field_schema.as_ref())
                .map_err(|e| format!("column '{}': {e}", col.spec.name))?,
            _ if !col.spec.nullable && op == "d" => {
                return Err(format!(
                    "column '{}' is null or missing in the delete event's 'before' image but not \
                     nullable (a delete carries only the key columns unless the table has \
                     REPLICA IDENTITY FULL; or declare the column nullable with '?')",
                    col.spec.name
                ))
            }
            _ => col.push_null()?,
        }
    }
    op_col.values.push_str(op, ScalarType::Utf8)?;
    op_col.end_row()?;
    let source = event.get("source").and_then(|s| s.as_object());
    for (col, key) in [(ts_col, "ts_ms"), (lsn_col, "lsn")] {
        match source.as_ref().and_then(|s| s.get(key)) {
            Some(v) if v.value_type() != ValueType::Null => {
                json::push_scalar(col, &v).map_err(|e| format!("source.{key}: {e}"))?;
                col.end_row()?;
            }
            _ => col.push_null()?,
        }
    }
    Ok(())
}

/// The `before`/`after` struct's schema in the Connect schema of the envelope.
fn row_field_schemas<'t, 'i>(schema: &Value<'t, 'i>, image: &str) -> Option<Object<'t, 'i>> {
    schema
        .as_object()?
        .get("fields")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_object())
        .find(|f| f.get("field").is_some_and(|n| n.as_str() == Some(image)))
}

/// What the schema says of one row field: its Connect type, logical name and decimal scale.
struct FieldSchema {
    ty: String,
    name: Option<String>,
    scale: Option<i32>,
}

fn field_schema(row: &Object<'_, '_>, column: &str) -> Option<FieldSchema> {
    let fields = row.get("fields")?;
    let field = fields
        .as_array()?
        .iter()
        .filter_map(|f| f.as_object())
        .find(|f| f.get("field").is_some_and(|n| n.as_str() == Some(column)))?;
    let scale = field
        .get("parameters")
        .and_then(|p| p.as_object().and_then(|p| p.get("scale")))
        .and_then(|s| {
            s.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| s.as_i64().map(|v| v as i32))
        });
    Some(FieldSchema {
        ty: field
            .get("type")
            .and_then(|t| t.as_str().map(str::to_string))
            .unwrap_or_default(),
        name: field.get("name").and_then(|n| n.as_str().map(str::to_string)),
        scale,
    })
}

fn append_value(
    col: &mut ColumnBuilder,
    v: &Value<'_, '_>,
    schema: Option<&FieldSchema>,
) -> std::result::Result<(), String> {
    if col.spec.shape != Shape::Scalar {
        // PostgreSQL arrays arrive as JSON arrays of numbers: the json format's rules apply.
        return json::append(col, v);
    }
    let ty = col.spec.ty;
    match (v.value_type(), ty) {
        (ValueType::String, ScalarType::Binary) => {
            let bytes = base64_decode(v.as_str().expect("str"))?;
            col.values.push_bytes(&bytes, ty)?;
        }
        (ValueType::String, _) if schema.and_then(|s| s.name.as_deref()) == Some(DECIMAL_SCHEMA_NAME) => {
            let schema = schema.expect("checked");
            let scale = schema
                .scale
                .ok_or("the Decimal field's schema has no 'scale' parameter")?;
            let unscaled = unscaled_integer(&base64_decode(v.as_str().expect("str"))?)?;
            push_decimal(col, unscaled, scale)?;
        }
        (ValueType::String, ScalarType::Utf8) => col.values.push_str(v.as_str().expect("str"), ty)?,
        (ValueType::String, _) if schema.is_some_and(|s| s.ty == "string") => {
            // `decimal.handling.mode=string`: the exact decimal text.
            let text = v.as_str().expect("str");
            let n = match text.parse::<i64>() {
                Ok(i) => Num::I(i),
                Err(_) => Num::F(
                    text.parse::<f64>()
                        .map_err(|_| format!("expected {}, got the text '{text}'", ty.name()))?,
                ),
            };
            col.values.push_num(n, ty)?;
        }
        (ValueType::String, _) => {
            return Err(format!(
                "expected {}, got a string: a decimal in Debezium's default precise mode is \
                 base64 whose scale is only in the embedded schema (enable \
                 value.converter.schemas.enable, or set decimal.handling.mode=double on the \
                 connector)",
                ty.name()
            ))
        }
        (ValueType::Object, _) => {
            // io.debezium.data.VariableScaleDecimal: {"scale": 2, "value": "<base64>"}.
            let o = v.as_object().expect("object");
            let (Some(scale), Some(value)) = (
                o.get("scale").and_then(|s| s.as_i64()),
                o.get("value").and_then(|s| s.as_str().map(str::to_string)),
            ) else {
                return Err(format!("expected {}, got object", ty.name()));
            };
            let scale = i32::try_from(scale).map_err(|_| format!("decimal scale {scale} out of range"))?;
            push_decimal(col, unscaled_integer(&base64_decode(&value)?)?, scale)?;
        }
        _ => return json::append(col, v),
    }
    col.end_row()
}

fn base64_decode(text: &str) -> std::result::Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("invalid base64 ({e})"))
}

/// A big-endian two's-complement integer (Connect's Decimal encoding) as an i128.
fn unscaled_integer(bytes: &[u8]) -> std::result::Result<i128, String> {
    if bytes.is_empty() {
        return Ok(0);
    }
    if bytes.len() > 16 {
        return Err(format!(
            "decimal of {} bytes is wider than 128 bits; use decimal.handling.mode=string \
             and a string column",
            bytes.len()
        ));
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Ok(i128::from_be_bytes(buf))
}

/// The exact decimal text of `unscaled × 10^-scale`.
fn decimal_text(unscaled: i128, scale: i32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat(scale.unsigned_abs() as usize));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

fn push_decimal(col: &mut ColumnBuilder, unscaled: i128, scale: i32) -> std::result::Result<(), String> {
    let ty = col.spec.ty;
    let text = decimal_text(unscaled, scale);
    if ty == ScalarType::Utf8 {
        return col.values.push_str(&text, ty);
    }
    let n = if ty.is_integer() {
        let integral = if scale <= 0 {
            unscaled.checked_mul(
                10i128
                    .checked_pow(scale.unsigned_abs())
                    .ok_or("decimal out of range")?,
            )
        } else {
            let divisor = 10i128
                .checked_pow(scale as u32)
                .ok_or("decimal scale out of range")?;
            if unscaled % divisor != 0 {
                return Err(format!("expected {}, got non-integer decimal {text}", ty.name()));
            }
            Some(unscaled / divisor)
        };
        let integral = integral.ok_or("decimal out of range")?;
        i64::try_from(integral)
            .map(Num::I)
            .or_else(|_| u64::try_from(integral).map(Num::U))
            .map_err(|_| format!("decimal {text} is out of range for {}", ty.name()))?
    } else {
        // Parsing the exact text rounds correctly, unlike dividing by a power of ten.
        Num::F(text.parse().map_err(|_| format!("cannot read decimal {text}"))?)
    };
    col.values.push_num(n, ty)
}

impl Decoder for DebeziumDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        self.row
            .iter()
            .chain([&self.op, &self.source_ts_ms, &self.lsn])
            .map(|c| c.field())
            .collect()
    }

    fn decode(&mut self, _key: Option<&[u8]>, value: Option<&[u8]>) -> std::result::Result<(), String> {
        // Tombstones never get here (`skips_tombstones`); a null value is still refused cleanly.
        let value = super::require_value(value)?;
        match self.decode_event(value) {
            Ok(()) => {
                self.rows += 1;
                Ok(())
            }
            Err(e) => {
                let rows = self.rows;
                for c in self.all_columns() {
                    c.truncate(rows);
                }
                Err(e)
            }
        }
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.all_columns().map(|c| c.finish()).collect()
    }

    fn skips_tombstones(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    use arrow_array::Array;

    fn decoder(cols: &[(&str, &str)]) -> DebeziumDecoder {
        DebeziumDecoder::new(
            cols.iter()
                .map(|(n, d)| ColumnSpec::parse(n, d).unwrap())
                .collect(),
        )
        .unwrap()
    }

    const SOURCE: &str =
        r#""source": {"connector": "postgresql", "ts_ms": 1700000000123, "lsn": 24023928, "txId": 7}"#;

    #[test]
    fn creates_updates_and_deletes_without_schema() {
        let mut d = decoder(&[("id", "int32"), ("name", "string"), ("score", "float64?")]);
        let events = [
            format!(
                r#"{{"before": null, "after": {{"id": 1, "name": "a", "score": 0.5}}, "op": "r", {SOURCE}}}"#
            ),
            format!(
                r#"{{"before": null, "after": {{"id": 2, "name": "b", "score": null}}, "op": "c", {SOURCE}}}"#
            ),
            format!(
                r#"{{"before": null, "after": {{"id": 2, "name": "b2", "score": 2}}, "op": "u", {SOURCE}}}"#
            ),
            format!(
                r#"{{"before": {{"id": 1, "name": "a", "score": 0.5}}, "after": null, "op": "d", {SOURCE}}}"#
            ),
        ];
        for e in &events {
            d.decode(None, Some(e.as_bytes())).unwrap();
        }
        let cols = d.finish();
        assert_eq!(cols.len(), 6);
        assert_eq!(cols[0].as_primitive::<Int32Type>().values(), &[1, 2, 2, 1]);
        let names = cols[1].as_string::<i32>();
        assert_eq!(names.value(2), "b2");
        assert!(cols[2].is_null(1));
        assert_eq!(cols[2].as_primitive::<Float64Type>().value(2), 2.0);
        let ops = cols[3].as_string::<i32>();
        assert_eq!(
            (0..4).map(|i| ops.value(i)).collect::<Vec<_>>(),
            ["r", "c", "u", "d"]
        );
        assert_eq!(cols[4].as_primitive::<Int64Type>().value(0), 1_700_000_000_123);
        assert_eq!(cols[5].as_primitive::<Int64Type>().value(3), 24_023_928);
        let names: Vec<_> = d.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["id", "name", "score", "__op", "__source_ts_ms", "__lsn"]);
    }

    #[test]
    fn embedded_schema_gives_decimal_scale() {
        // price numeric(10,2) = 1234.50 → unscaled 123450 = 0x01E23A, base64 "AeI6".
        // A negative one: -0.05 → unscaled -5 = 0xFB, base64 "+w==".
        let schema = r#"{"type": "struct", "fields": [
            {"type": "struct", "optional": true, "field": "before", "fields": []},
            {"type": "struct", "optional": true, "field": "after", "fields": [
                {"type": "int32", "optional": false, "field": "id"},
                {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
                 "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "price"},
                {"type": "bytes", "optional": true, "field": "blob"},
                {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "field": "at"}
            ]},
            {"type": "string", "optional": false, "field": "op"}
        ]}"#;
        let event = |price: &str| {
            format!(
                r#"{{"schema": {schema}, "payload": {{"before": null, "after": {{"id": 1, "price": "{price}", "blob": "AAEC", "at": 1700000000123456}}, "op": "c", {SOURCE}}}}}"#
            )
        };
        let mut d = decoder(&[("price", "float64"), ("blob", "binary"), ("at", "int64")]);
        d.decode(None, Some(event("AeI6").as_bytes())).unwrap();
        d.decode(None, Some(event("+w==").as_bytes())).unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Float64Type>().values(), &[1234.5, -0.05]);
        assert_eq!(cols[1].as_binary::<i32>().value(0), &[0, 1, 2]);
        assert_eq!(
            cols[2].as_primitive::<Int64Type>().value(0),
            1_700_000_000_123_456
        );

        let mut text = decoder(&[("price", "string")]);
        text.decode(None, Some(event("AeI6").as_bytes())).unwrap();
        text.decode(None, Some(event("+w==").as_bytes())).unwrap();
        let cols = text.finish();
        let s = cols[0].as_string::<i32>();
        assert_eq!((s.value(0), s.value(1)), ("1234.50", "-0.05"));

        let mut int = decoder(&[("price", "int64")]);
        let err = int.decode(None, Some(event("AeI6").as_bytes())).unwrap_err();
        assert!(err.contains("non-integer decimal 1234.50"), "{err}");
    }

    #[test]
    fn decimals_without_schema_and_variable_scale() {
        let mut d = decoder(&[("price", "float64")]);
        let err = d
            .decode(
                None,
                Some(br#"{"after": {"price": "AeI6"}, "op": "c", "source": {}}"#),
            )
            .unwrap_err();
        assert!(
            err.contains("column 'price'") && err.contains("decimal.handling.mode=double"),
            "{err}"
        );
        d.decode(
            None,
            Some(br#"{"after": {"price": {"scale": 3, "value": "AeI6"}}, "op": "c", "source": {}}"#),
        )
        .unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Float64Type>().values(), &[123.45]);
        assert!(cols[2].is_null(0), "no source.ts_ms");
    }

    #[test]
    fn bad_events_say_why_and_leave_no_partial_row() {
        let mut d = decoder(&[("id", "int64"), ("name", "string")]);
        let cases: [(&[u8], &str); 6] = [
            (b"{nope", "malformed JSON"),
            (br#"{"id": 1, "name": "x"}"#, "no 'op' field"),
            (br#"{"op": "c", "after": null}"#, "no 'after' row image"),
            (br#"{"op": "t"}"#, "truncate"),
            (
                br#"{"op": "d", "before": {"id": 1, "name": null}}"#,
                "REPLICA IDENTITY FULL",
            ),
            (
                br#"{"op": "c", "after": {"id": 5, "name": 3}}"#,
                "column 'name': expected string, got number",
            ),
        ];
        for (payload, want) in cases {
            let err = d.decode(None, Some(payload)).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        d.decode(None, Some(br#"{"op": "c", "after": {"id": 9, "name": "ok"}}"#))
            .unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[9]);
        assert_eq!(cols[2].len(), 1);
        assert!(d.skips_tombstones());
    }

    #[test]
    fn decimal_text_is_exact() {
        assert_eq!(decimal_text(123450, 2), "1234.50");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(decimal_text(7, -2), "700");
        assert_eq!(unscaled_integer(&[0xff, 0xff]).unwrap(), -1);
        assert_eq!(unscaled_integer(&[0x00, 0x80]).unwrap(), 128);
    }

    #[test]
    fn reserved_column_names_are_refused() {
        let err = DebeziumDecoder::new(vec![ColumnSpec::parse("__op", "string").unwrap()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("clashes"));
    }
}
