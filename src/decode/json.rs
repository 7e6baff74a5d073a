//! `json`: one JSON object per message, decoded against declared columns.

use super::{require_value, Decoder};
use crate::error::{Error, Result};
use crate::schema::{ColumnBuilder, ColumnSpec, Num, Shape};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use simd_json::{BorrowedValue as Value, StaticNode};

pub struct JsonDecoder {
    columns: Vec<ColumnBuilder>,
    /// simd-json parses in place, so each payload is copied into this reused buffer first.
    scratch: Vec<u8>,
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
            rows: 0,
        })
    }

    fn decode_object(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        self.scratch.clear();
        self.scratch.extend_from_slice(value);
        let parsed =
            simd_json::to_borrowed_value(&mut self.scratch).map_err(|e| format!("malformed JSON: {e}"))?;
        let Value::Object(object) = parsed else {
            return Err(format!("expected a JSON object, got {}", kind(&parsed)));
        };
        for col in &mut self.columns {
            match object.get(col.spec.name.as_str()) {
                None | Some(Value::Static(StaticNode::Null)) => col.push_null()?,
                Some(v) => append(col, v).map_err(|e| format!("field '{}': {e}", col.spec.name))?,
            }
        }
        Ok(())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Static(StaticNode::Null) => "null",
        Value::Static(StaticNode::Bool(_)) => "boolean",
        Value::Static(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn push_scalar(col: &mut ColumnBuilder, v: &Value) -> std::result::Result<(), String> {
    let ty = col.spec.ty;
    match v {
        Value::Static(StaticNode::I64(i)) => col.values.push_num(Num::I(*i), ty),
        Value::Static(StaticNode::U64(u)) => col.values.push_num(Num::U(*u), ty),
        Value::Static(StaticNode::F64(f)) => col.values.push_num(Num::F(*f), ty),
        Value::Static(StaticNode::Bool(b)) => col.values.push_bool(*b, ty),
        Value::String(s) if ty == crate::schema::ScalarType::Binary => {
            col.values.push_bytes(s.as_bytes(), ty)
        }
        Value::String(s) => col.values.push_str(s, ty),
        other => Err(format!("expected {}, got {}", ty.name(), kind(other))),
    }
}

fn append(col: &mut ColumnBuilder, v: &Value) -> std::result::Result<(), String> {
    match col.spec.shape {
        Shape::Scalar => push_scalar(col, v)?,
        Shape::Fixed(_) | Shape::Variable => {
            let Value::Array(items) = v else {
                return Err(format!(
                    "expected an array of {}, got {}",
                    col.spec.ty.name(),
                    kind(v)
                ));
            };
            for (i, item) in items.iter().enumerate() {
                push_scalar(col, item).map_err(|e| format!("element {i}: {e}"))?;
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
