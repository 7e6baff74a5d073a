//! `avro`: Avro binary records, plain or in the Confluent Schema Registry wire format.

use super::read_plan::Plan;
use crate::error::Error;
use crate::format::columns::{ColumnBuilder, ColumnSpec, Num, ScalarType, Shape};
use crate::format::{require_value, Decoder};
use crate::registry::{SchemaFailure, SchemaRegistry, SchemaType, WIRE_HEADER, WIRE_MAGIC};
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use std::collections::HashMap;
use std::sync::Arc;

pub struct AvroDecoder {
    reader_schema: Schema,
    /// The named types `reader_schema` refers to but does not define (a registry subject's
    /// references), for resolving values against it.
    reader_named: Vec<Schema>,
    /// Whether values carry the Confluent header (a registry, or writer schemas by id, given);
    /// otherwise they are plain Avro datums written with `reader_schema`.
    framed: bool,
    /// Writer schemas by registry id: given up front, or fetched from `registry` on first sight.
    writers: HashMap<u32, Writer>,
    registry: Option<Arc<SchemaRegistry>>,
    /// A registry failure (not a bad message) that stopped the last `decode`.
    unavailable: Option<Error>,
    /// Compiled plans by writer id (`None`: plain datums), `None` where a writer schema needs
    /// the general path.
    plans: HashMap<Option<u32>, Option<Arc<Plan>>>,
    /// The writer id and plan of the last message decoded with a plan.
    last_plan: Option<(Option<u32>, Arc<Plan>)>,
    /// Set in tests to decode everything with the general path (the reference).
    general_only: Option<()>,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

/// A writer schema and the named types it refers to but does not define (its registry
/// references), which decoding its values needs.
struct Writer {
    schema: Schema,
    named: Vec<Schema>,
}

/// Maps an Avro field schema to a column type; `["null", T]` unions make nullable columns. A
/// reference to a named type (`"type": "ml.Kind"`) is looked up in `names`.
fn column_for(name: &str, schema: &Schema, names: &NamesRef<'_>) -> Result<ColumnSpec, String> {
    let resolve = |s: &'_ Schema| -> Result<Schema, String> {
        match s {
            Schema::Ref { name: type_name } => names
                .get(type_name)
                .map(|&s| s.clone())
                .ok_or_else(|| format!("field '{name}': unknown Avro type '{}'", type_name.fullname(None))),
            s => Ok(s.clone()),
        }
    };
    let schema = &match schema {
        Schema::Union(u) => Schema::Union(
            apache_avro::schema::UnionSchema::new(
                u.variants().iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
            )
            .map_err(|e| format!("field '{name}': {e}"))?,
        ),
        Schema::Array(a) => Schema::array(resolve(&a.items)?),
        s => resolve(s)?,
    };
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
            scalar(s).ok_or_else(|| {
                let what = match s {
                    Schema::Record(r) => format!("record '{}'", r.name.fullname(None)),
                    other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
                };
                format!(
                    "field '{name}': an Avro {what} is not supported as a column (scalars, enums, \
                     fixed, strings, bytes and arrays of numbers are)"
                )
            })?,
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
    /// `schema` is the reader schema; `named`, the schemas of the named types it refers to
    /// without defining them (the references of a registry subject), in definition order.
    pub fn new(
        schema: &str,
        named: &[String],
        registry_schemas: &[(u32, String)],
        registry: Option<Arc<SchemaRegistry>>,
    ) -> Result<Self, String> {
        let (reader_schema, reader_named) = if named.is_empty() {
            let s = Schema::parse_str(schema).map_err(|e| format!("invalid Avro schema: {e}"))?;
            (s, Vec::new())
        } else {
            Schema::parse_str_with_list(schema, named).map_err(|e| format!("invalid Avro schema: {e}"))?
        };
        let Schema::Record(record) = &reader_schema else {
            return Err("the Avro schema must be a record".into());
        };
        // Definitions before the references to them: the referenced types first.
        let all: Vec<&Schema> = reader_named
            .iter()
            .chain(std::iter::once(&reader_schema))
            .collect();
        let resolved = ResolvedSchema::try_from(all).map_err(|e| format!("invalid Avro schema: {e}"))?;
        let columns = record
            .fields
            .iter()
            .map(|f| column_for(&f.name, &f.schema, resolved.get_names()).map(ColumnBuilder::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writers = HashMap::new();
        for (id, s) in registry_schemas {
            let w = Schema::parse_str(s).map_err(|e| format!("invalid Avro schema for id {id}: {e}"))?;
            writers.insert(
                *id,
                Writer {
                    schema: w,
                    named: Vec::new(),
                },
            );
        }
        Ok(AvroDecoder {
            reader_schema,
            reader_named,
            framed: registry.is_some() || !writers.is_empty(),
            writers,
            registry,
            unavailable: None,
            plans: HashMap::new(),
            last_plan: None,
            general_only: None,
            columns,
            rows: 0,
        })
    }

    /// The writer schema of `id`: known, or fetched from the registry (once per id).
    fn writer(&mut self, id: u32) -> Result<&Writer, String> {
        if !self.writers.contains_key(&id) {
            let Some(registry) = &self.registry else {
                let mut known: Vec<_> = self.writers.keys().collect();
                known.sort();
                return Err(format!("unknown schema id {id} (known ids: {known:?})"));
            };
            let writer = registry
                .value_schema(id)
                .and_then(|found| {
                    if found.schema_type != SchemaType::Avro {
                        return Err(SchemaFailure::Bad(format!(
                            "schema id {id} is a {} schema in the registry, not Avro",
                            found.schema_type.name()
                        )));
                    }
                    parse_registered(registry, &found.schema, &found.references)
                        .map_err(|f| f.context(format_args!("the registry's schema id {id}")))
                })
                .map_err(|f| f.into_decode_error(&mut self.unavailable))?;
            let (schema, named) = writer;
            self.writers.insert(id, Writer { schema, named });
        }
        Ok(&self.writers[&id])
    }

    fn decode_record(&mut self, value: &[u8]) -> Result<(), String> {
        let (writer_id, mut body) = if !self.framed {
            (None, value)
        } else {
            if value.len() < WIRE_HEADER || value[0] != WIRE_MAGIC {
                return Err("not in the Confluent wire format (magic byte 0 + 4-byte schema id)".into());
            }
            let id = u32::from_be_bytes(value[1..WIRE_HEADER].try_into().expect("4 bytes"));
            (Some(id), &value[WIRE_HEADER..])
        };
        // Most topics hold one writer schema: the last plan used, without a lookup.
        if let Some((last_id, plan)) = &self.last_plan {
            if *last_id == writer_id {
                return plan.decode(body, &mut self.columns);
            }
        }
        if let Some(id) = writer_id {
            self.writer(id)?;
        }
        // The compiled plan of this writer schema, where it has one (compiled on first use).
        if self.general_only.is_none() {
            let writer = writer_id.map_or(&self.reader_schema, |id| &self.writers[&id].schema);
            let plan = self
                .plans
                .entry(writer_id)
                .or_insert_with(|| Plan::compile(writer, &self.reader_schema, &self.columns).map(Arc::new));
            if let Some(plan) = plan {
                let plan = plan.clone();
                self.last_plan = Some((writer_id, plan.clone()));
                return plan.decode(body, &mut self.columns);
            }
        }
        let (writer, writer_named) = match writer_id {
            Some(id) => (&self.writers[&id].schema, &self.writers[&id].named),
            None => (&self.reader_schema, &self.reader_named),
        };
        let datum = if writer_named.is_empty() && self.reader_named.is_empty() {
            apache_avro::from_avro_datum(writer, &mut body, Some(&self.reader_schema))
        } else {
            // Named types defined in referenced schemas: each side resolves its references
            // against the types it refers to, then its own schema (definitions first).
            apache_avro::from_avro_datum_reader_schemata(
                writer,
                writer_named.iter().chain([writer]).collect(),
                &mut body,
                Some(&self.reader_schema),
                self.reader_named.iter().chain([&self.reader_schema]).collect(),
            )
        }
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
/// under other subjects) fetched first: the schema, and the referenced schemas.
pub(crate) fn parse_registered(
    registry: &SchemaRegistry,
    schema: &str,
    references: &[crate::registry::SchemaReference],
) -> Result<(Schema, Vec<Schema>), SchemaFailure> {
    if references.is_empty() {
        return Schema::parse_str(schema)
            .map(|s| (s, Vec::new()))
            .map_err(|e| SchemaFailure::Bad(format!("invalid Avro schema: {e}")));
    }
    let named = referenced_schemas(registry, references)?;
    Schema::parse_str_with_list(schema, &named)
        .map_err(|e| SchemaFailure::Bad(format!("invalid Avro schema: {e}")))
}

/// The texts of the schemas `references` name, fetched depth-first so that every named type is
/// defined before a schema that uses it.
pub fn referenced_schemas(
    registry: &SchemaRegistry,
    references: &[crate::registry::SchemaReference],
) -> Result<Vec<String>, SchemaFailure> {
    let mut texts: Vec<String> = Vec::new();
    let mut pending: Vec<(crate::registry::SchemaReference, bool)> =
        references.iter().rev().map(|r| (r.clone(), false)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((reference, expanded)) = pending.pop() {
        // A registry that cannot answer here stops the read like one that cannot answer the id.
        let found = registry.referenced(&reference)?;
        if expanded || found.references.is_empty() {
            if seen.insert((reference.subject.clone(), reference.version)) {
                texts.push(found.schema);
            }
        } else {
            pending.push((reference, true));
            pending.extend(found.references.iter().rev().map(|r| (r.clone(), false)));
        }
    }
    Ok(texts)
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
}
