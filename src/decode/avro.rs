//! `avro`: Avro binary records, plain or in the Confluent Schema Registry wire format.

use super::{require_value, Decoder};
use crate::error::Error;
use crate::registry::{SchemaRegistry, SchemaType, WIRE_HEADER, WIRE_MAGIC};
use crate::schema::{ColumnBuilder, ColumnSpec, Num, ScalarType, Shape};
use apache_avro::types::Value;
use apache_avro::Schema;
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use std::collections::HashMap;
use std::sync::Arc;

pub struct AvroDecoder {
    reader_schema: Schema,
    /// Whether values carry the Confluent header (a registry, or writer schemas by id, given);
    /// otherwise they are plain Avro datums written with `reader_schema`.
    framed: bool,
    /// Writer schemas by registry id: given up front, or fetched from `registry` on first sight.
    writers: HashMap<u32, Schema>,
    registry: Option<Arc<SchemaRegistry>>,
    /// A registry failure (not a bad message) that stopped the last `decode`.
    unavailable: Option<Error>,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

/// Maps an Avro field schema to a column type; `["null", T]` unions make nullable columns.
fn column_for(name: &str, schema: &Schema) -> Result<ColumnSpec, String> {
    let (schema, nullable) = match schema {
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|s| !matches!(s, Schema::Null))
                .collect();
            match non_null.as_slice() {
                [one] if u.variants().len() == 2 => (*one, true),
                _ => return Err(format!("field '{name}': only [\"null\", T] unions are supported")),
            }
        }
        s => (s, false),
    };
    let scalar = |s: &Schema| -> Option<ScalarType> {
        Some(match s {
            Schema::Boolean => ScalarType::Bool,
            Schema::Int | Schema::Date | Schema::TimeMillis => ScalarType::Int32,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => ScalarType::Int64,
            Schema::Float => ScalarType::Float32,
            Schema::Double => ScalarType::Float64,
            Schema::String | Schema::Enum(_) | Schema::Uuid => ScalarType::Utf8,
            Schema::Bytes | Schema::Fixed(_) => ScalarType::Binary,
            _ => return None,
        })
    };
    let (ty, shape) = match schema {
        Schema::Array(a) => match scalar(&a.items) {
            Some(t) if t.byte_width().is_some() => (t, Shape::Variable),
            _ => return Err(format!("field '{name}': only arrays of numbers are supported")),
        },
        s => (
            scalar(s).ok_or_else(|| format!("field '{name}': Avro type {s:?} is not supported"))?,
            Shape::Scalar,
        ),
    };
    Ok(ColumnSpec {
        name: name.to_string(),
        ty,
        shape,
        nullable,
    })
}

impl AvroDecoder {
    pub fn new(
        schema: &str,
        registry_schemas: &[(u32, String)],
        registry: Option<Arc<SchemaRegistry>>,
    ) -> Result<Self, String> {
        let reader_schema = Schema::parse_str(schema).map_err(|e| format!("invalid Avro schema: {e}"))?;
        let Schema::Record(record) = &reader_schema else {
            return Err("the Avro schema must be a record".into());
        };
        let columns = record
            .fields
            .iter()
            .map(|f| column_for(&f.name, &f.schema).map(ColumnBuilder::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writers = HashMap::new();
        for (id, s) in registry_schemas {
            let w = Schema::parse_str(s).map_err(|e| format!("invalid Avro schema for id {id}: {e}"))?;
            writers.insert(*id, w);
        }
        Ok(AvroDecoder {
            reader_schema,
            framed: registry.is_some() || !writers.is_empty(),
            writers,
            registry,
            unavailable: None,
            columns,
            rows: 0,
        })
    }

    /// The writer schema of `id`: known, or fetched from the registry (once per id).
    fn writer(&mut self, id: u32) -> Result<&Schema, String> {
        if !self.writers.contains_key(&id) {
            let Some(registry) = &self.registry else {
                let mut known: Vec<_> = self.writers.keys().collect();
                known.sort();
                return Err(format!("unknown schema id {id} (known ids: {known:?})"));
            };
            let writer = match registry.schema_by_id(id) {
                Ok(found) if found.schema_type != SchemaType::Avro => {
                    return Err(format!(
                        "schema id {id} is a {} schema in the registry, not Avro",
                        found.schema_type.name()
                    ))
                }
                Ok(found) => parse_registered(registry, &found.schema, &found.references)
                    .map_err(|e| format!("the registry's schema id {id}: {e}"))?,
                Err(e) if e.is_registry_not_found() => {
                    return Err(format!(
                        "unknown schema id {id}: the registry at {} has no such schema",
                        registry.url()
                    ))
                }
                Err(e) => {
                    let reason = e.to_string();
                    self.unavailable = Some(e);
                    return Err(reason);
                }
            };
            self.writers.insert(id, writer);
        }
        Ok(&self.writers[&id])
    }

    fn decode_record(&mut self, value: &[u8]) -> Result<(), String> {
        let (writer, mut body) = if !self.framed {
            (&self.reader_schema, value)
        } else {
            if value.len() < WIRE_HEADER || value[0] != WIRE_MAGIC {
                return Err("not in the Confluent wire format (magic byte 0 + 4-byte schema id)".into());
            }
            let id = u32::from_be_bytes(value[1..WIRE_HEADER].try_into().expect("4 bytes"));
            self.writer(id)?;
            (&self.writers[&id], &value[WIRE_HEADER..])
        };
        let datum = apache_avro::from_avro_datum(writer, &mut body, Some(&self.reader_schema))
            .map_err(|e| format!("invalid Avro: {e}"))?;
        if !body.is_empty() {
            return Err(format!(
                "invalid Avro: {} bytes left after the record",
                body.len()
            ));
        }
        let Value::Record(fields) = datum else {
            return Err("invalid Avro: not a record".into());
        };
        for (col, (_, v)) in self.columns.iter_mut().zip(fields.iter()) {
            append(col, v).map_err(|e| format!("field '{}': {e}", col.spec.name))?;
        }
        Ok(())
    }
}

fn push_scalar(col: &mut ColumnBuilder, v: &Value) -> Result<(), String> {
    let ty = col.spec.ty;
    match v {
        Value::Boolean(b) => col.values.push_bool(*b, ty),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => {
            col.values.push_num(Num::I(i64::from(*i)), ty)
        }
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => col.values.push_num(Num::I(*i), ty),
        Value::Float(f) => col.values.push_num(Num::F(f64::from(*f)), ty),
        Value::Double(f) => col.values.push_num(Num::F(*f), ty),
        Value::String(s) | Value::Enum(_, s) => col.values.push_str(s, ty),
        Value::Uuid(u) => col.values.push_str(&u.to_string(), ty),
        Value::Bytes(b) | Value::Fixed(_, b) => col.values.push_bytes(b, ty),
        other => Err(format!("unsupported Avro value {other:?}")),
    }
}

fn append(col: &mut ColumnBuilder, v: &Value) -> Result<(), String> {
    let v = match v {
        Value::Union(_, inner) => inner.as_ref(),
        v => v,
    };
    match (v, col.spec.shape) {
        (Value::Null, _) => col.push_null(),
        (Value::Array(items), Shape::Variable) => {
            for item in items {
                push_scalar(col, item)?;
            }
            col.end_row()
        }
        (v, _) => {
            push_scalar(col, v)?;
            col.end_row()
        }
    }
}

/// Parses a registered Avro schema, with the schemas it references (named types registered
/// under other subjects) fetched first.
pub(crate) fn parse_registered(
    registry: &SchemaRegistry,
    schema: &str,
    references: &[crate::registry::SchemaReference],
) -> Result<Schema, String> {
    if references.is_empty() {
        return Schema::parse_str(schema).map_err(|e| format!("invalid Avro schema: {e}"));
    }
    // Depth-first, so that every named type is defined before a schema that uses it.
    let mut texts: Vec<String> = Vec::new();
    let mut pending: Vec<(crate::registry::SchemaReference, bool)> =
        references.iter().rev().map(|r| (r.clone(), false)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((reference, expanded)) = pending.pop() {
        let found = registry
            .subject_version(&reference.subject, Some(reference.version))
            .map_err(|e| format!("reference '{}': {e}", reference.name))?;
        if expanded || found.references.is_empty() {
            if seen.insert((reference.subject.clone(), reference.version)) {
                texts.push(found.schema);
            }
        } else {
            pending.push((reference, true));
            pending.extend(found.references.iter().rev().map(|r| (r.clone(), false)));
        }
    }
    texts.push(schema.to_owned());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut parsed = Schema::parse_list(refs).map_err(|e| format!("invalid Avro schema: {e}"))?;
    parsed
        .pop()
        .ok_or_else(|| "invalid Avro schema: empty".to_owned())
}

impl Decoder for AvroDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        self.columns.iter().map(|c| c.field()).collect()
    }

    fn decode(&mut self, _key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        let value = require_value(value)?;
        match self.decode_record(value) {
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
        self.columns.iter_mut().map(|c| c.finish()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::to_avro_datum;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array;

    const SCHEMA: &str = r#"{"type": "record", "name": "r", "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": {"type": "array", "items": "double"}},
        {"name": "tag", "type": ["null", "string"]}]}"#;

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
        let mut plain = AvroDecoder::new(SCHEMA, &[], None).unwrap();
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

        let mut framed = AvroDecoder::new(SCHEMA, &[(7, SCHEMA.to_string())], None).unwrap();
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
}
