//! `json`: one JSON object per message, decoded against declared columns.

use super::{require_value, Decoder};
use crate::error::{Error, Result};
use crate::schema::{ColumnBuilder, ColumnSpec, Num, Shape};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use simd_json::prelude::{TypedValue, ValueAsScalar};
use simd_json::tape::Value;
use simd_json::{Buffers, Tape, ValueType};

pub struct JsonDecoder {
    columns: Vec<ColumnBuilder>,
    /// simd-json parses in place, so each payload is copied into this reused buffer first.
    scratch: Vec<u8>,
    /// Parser scratch space and the parsed tape, reused across messages: parsing allocates
    /// nothing per message once they have grown to the largest payload.
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    rows: usize,
}

impl JsonDecoder {
    pub fn new(columns: Vec<ColumnSpec>) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::Config(
                "the json format needs at least one declared column".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for c in &columns {
            if !names.insert(c.name.as_str()) {
                return Err(Error::Config(format!("column '{}' is declared twice", c.name)));
            }
        }
        Ok(JsonDecoder {
            columns: columns.into_iter().map(ColumnBuilder::new).collect(),
            scratch: Vec::new(),
            buffers: Buffers::default(),
            tape: Some(Tape::null()),
            rows: 0,
        })
    }

    fn decode_object(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        self.scratch.clear();
        self.scratch.extend_from_slice(value);
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape)
            .map_err(|e| format!("malformed JSON: {e}"))
            .and_then(|()| append_object(&mut self.columns, tape.as_value()));
        self.tape = Some(tape.reset());
        result
    }
}

fn append_object(columns: &mut [ColumnBuilder], parsed: Value<'_, '_>) -> std::result::Result<(), String> {
    let Some(object) = parsed.as_object() else {
        return Err(format!("expected a JSON object, got {}", kind(&parsed)));
    };
    for col in columns {
        match object.get(col.spec.name.as_str()) {
            Some(v) if v.value_type() != ValueType::Null => {
                append(col, &v).map_err(|e| format!("field '{}': {e}", col.spec.name))?
            }
            _ => col.push_null()?,
        }
    }
    Ok(())
}

pub(super) fn kind(v: &Value<'_, '_>) -> &'static str {
    match v.value_type() {
        ValueType::Null => "null",
        ValueType::Bool => "boolean",
        ValueType::String => "string",
        ValueType::Array => "array",
        ValueType::Object => "object",
        _ => "number",
    }
}

pub(super) fn push_scalar(col: &mut ColumnBuilder, v: &Value<'_, '_>) -> std::result::Result<(), String> {
    let ty = col.spec.ty;
    match v.value_type() {
        ValueType::I64 => col.values.push_num(Num::I(v.as_i64().expect("i64")), ty),
        ValueType::U64 => col.values.push_num(Num::U(v.as_u64().expect("u64")), ty),
        ValueType::F64 => col.values.push_num(Num::F(v.as_f64().expect("f64")), ty),
        ValueType::Bool => col.values.push_bool(v.as_bool().expect("bool"), ty),
        ValueType::String if ty == crate::schema::ScalarType::Binary => {
            col.values.push_bytes(v.as_str().expect("str").as_bytes(), ty)
        }
        ValueType::String => col.values.push_str(v.as_str().expect("str"), ty),
        _ => Err(format!("expected {}, got {}", ty.name(), kind(v))),
    }
}

pub(super) fn append(col: &mut ColumnBuilder, v: &Value<'_, '_>) -> std::result::Result<(), String> {
    match col.spec.shape {
        Shape::Scalar => push_scalar(col, v)?,
        Shape::Fixed(_) | Shape::Variable => {
            let Some(items) = v.as_array() else {
                return Err(format!(
                    "expected an array of {}, got {}",
                    col.spec.ty.name(),
                    kind(v)
                ));
            };
            for (i, item) in items.iter().enumerate() {
                push_scalar(col, &item).map_err(|e| format!("element {i}: {e}"))?;
            }
        }
    }
    col.end_row()
}

impl Decoder for JsonDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        self.columns.iter().map(|c| c.field()).collect()
    }

    fn decode(&mut self, _key: Option<&[u8]>, value: Option<&[u8]>) -> std::result::Result<(), String> {
        let value = require_value(value)?;
        match self.decode_object(value) {
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

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.columns.iter_mut().map(|c| c.finish()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type};
    use arrow_array::Array;

    fn decoder() -> JsonDecoder {
        JsonDecoder::new(vec![
            ColumnSpec::parse("id", "int64").unwrap(),
            ColumnSpec::parse("x", "float32[3]").unwrap(),
            ColumnSpec::parse("note", "string?").unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn decodes_declared_fields() {
        let mut d = decoder();
        d.decode(
            None,
            Some(br#"{"id": 7, "x": [1, 2.5, 3], "note": "hi", "extra": true}"#),
        )
        .unwrap();
        d.decode(None, Some(br#"{"id": 8, "x": [0, 0, 0]}"#)).unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[7, 8]);
        let x = cols[1].as_fixed_size_list();
        assert_eq!(
            x.values().as_primitive::<Float32Type>().values(),
            &[1.0, 2.5, 3.0, 0.0, 0.0, 0.0]
        );
        assert!(cols[2].is_null(1));
    }

    #[test]
    fn bad_messages_name_the_field_and_leave_no_partial_row() {
        let mut d = decoder();
        d.decode(None, Some(br#"{"id": 1, "x": [1, 2, 3]}"#)).unwrap();
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "malformed JSON"),
            (b"[1, 2]", "expected a JSON object, got array"),
            (
                br#"{"id": "a", "x": [1, 2, 3]}"#,
                "field 'id': expected int64, got string",
            ),
            (br#"{"x": [1, 2, 3]}"#, "field 'id' is null or missing"),
            (
                br#"{"id": 2, "x": [1, 2]}"#,
                "field 'x': expected 3 elements, got 2",
            ),
            (
                br#"{"id": 2, "x": [1, "b", 3]}"#,
                "element 1: expected float32, got string",
            ),
        ];
        for (payload, want) in cases {
            let err = d.decode(None, Some(payload)).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        d.decode(None, Some(br#"{"id": 3, "x": [4, 5, 6]}"#)).unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 3]);
        assert_eq!(cols[1].as_fixed_size_list().values().len(), 6);
    }
}
