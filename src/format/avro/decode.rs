//! `avro`: Avro binary records, plain or in the Confluent Schema Registry wire format.

use super::read_plan::Plan;
use crate::error::Error;
use crate::format::columns::{ColumnBuilder, ColumnSpec, Num, ScalarType, Shape};
use crate::format::{require_value, Decoder};
use crate::registry::{SchemaFailure, SchemaRegistry, SchemaType, WIRE_HEADER, WIRE_MAGIC};
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use arrow_array::{ArrayRef, ListArray, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields};
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
    columns: Vec<Col>,
    rows: usize,
}

/// A writer schema and the named types it refers to but does not define (its registry
/// references), which decoding its values needs.
struct Writer {
    schema: Schema,
    named: Vec<Schema>,
}

/// Resolves a reference to a named type (`"type": "ml.Kind"`) through `names`; other schemas
/// are returned as they are. Unions and arrays have their branches and items resolved.
fn resolve_refs(name: &str, schema: &Schema, names: &NamesRef<'_>) -> Result<Schema, String> {
    let resolve = |s: &'_ Schema| -> Result<Schema, String> {
        match s {
            Schema::Ref { name: type_name } => names
                .get(type_name)
                .map(|&s| s.clone())
                .ok_or_else(|| format!("field '{name}': unknown Avro type '{}'", type_name.fullname(None))),
            s => Ok(s.clone()),
        }
    };
    Ok(match schema {
        Schema::Union(u) => Schema::Union(
            apache_avro::schema::UnionSchema::new(
                u.variants().iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
            )
            .map_err(|e| format!("field '{name}': {e}"))?,
        ),
        Schema::Array(a) => Schema::array(resolve(&a.items)?),
        s => resolve(s)?,
    })
}

/// `T` of a `["null", T]` union and `true`, or the schema itself and `false`.
fn nullable_inner<'s>(name: &str, schema: &'s Schema) -> Result<(&'s Schema, bool), String> {
    match schema {
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|s| !matches!(s, Schema::Null))
                .collect();
            match non_null.as_slice() {
                [one] if u.variants().len() == 2 => Ok((*one, true)),
                _ => Err(format!("field '{name}': only [\"null\", T] unions are supported")),
            }
        }
        s => Ok((s, false)),
    }
}

/// Maps an Avro field schema to a column type; `["null", T]` unions make nullable columns. A
/// reference to a named type (`"type": "ml.Kind"`) is looked up in `names`.
fn column_for(name: &str, schema: &Schema, names: &NamesRef<'_>) -> Result<ColumnSpec, String> {
    let schema = &resolve_refs(name, schema, names)?;
    let (schema, nullable) = nullable_inner(name, schema)?;
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
            _ => {
                return Err(format!(
                    "field '{name}': only arrays of numbers and of records are supported"
                ))
            }
        },
        s => (
            scalar(s).ok_or_else(|| {
                let what = format!("{:?}", apache_avro::schema::SchemaKind::from(s)).to_lowercase();
                format!(
                    "field '{name}': an Avro {what} is not supported as a column (scalars, enums, \
                     fixed, strings, bytes, records and arrays of numbers or records are)"
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

/// One reader column: a scalar or a list of numbers (`ColumnBuilder`, as for every format), a
/// nested record (an Arrow struct), or an array of records (an Arrow list of structs).
#[derive(Debug)]
pub(super) enum Col {
    Leaf(ColumnBuilder),
    Struct(StructCol),
    List(ListCol),
}

#[derive(Debug)]
pub(super) struct StructCol {
    name: String,
    nullable: bool,
    /// Per-row validity (nullable structs only).
    validity: Vec<bool>,
    pub(super) children: Vec<Col>,
    rows: usize,
}

/// An array of records: the items are a struct column, never null.
#[derive(Debug)]
pub(super) struct ListCol {
    name: String,
    nullable: bool,
    validity: Vec<bool>,
    offsets: Vec<i32>,
    pub(super) item: Box<Col>,
}

fn offset_i32(len: usize) -> Result<i32, String> {
    i32::try_from(len).map_err(|_| "batch exceeds 2 GiB in one column; lower batch_size".to_string())
}

/// The column of reader field `name` of type `schema`. `seen` holds the records being expanded
/// (a record that contains itself has no column type).
fn col_for(name: &str, schema: &Schema, names: &NamesRef<'_>, seen: &mut Vec<String>) -> Result<Col, String> {
    let resolved = resolve_refs(name, schema, names)?;
    let (inner, nullable) = nullable_inner(name, &resolved)?;
    let record =
        |r: &apache_avro::schema::RecordSchema, seen: &mut Vec<String>| -> Result<StructCol, String> {
            let full = r.name.fullname(None);
            if seen.contains(&full) {
                return Err(format!(
                    "field '{name}': record '{full}' contains itself (recursive records have no column type)"
                ));
            }
            seen.push(full);
            let children = r
                .fields
                .iter()
                .map(|f| {
                    col_for(&f.name, &f.schema, names, seen).map_err(|e| match e.strip_prefix("field '") {
                        Some(rest) => format!("field '{name}.{rest}"),
                        None => e,
                    })
                })
                .collect::<Result<Vec<_>, _>>();
            seen.pop();
            Ok(StructCol {
                name: name.to_string(),
                nullable,
                validity: Vec::new(),
                children: children?,
                rows: 0,
            })
        };
    Ok(match inner {
        Schema::Record(r) => Col::Struct(record(r, seen)?),
        Schema::Array(a) => match a.items.as_ref() {
            Schema::Record(r) => {
                let mut item = record(r, seen)?;
                item.name = "item".into();
                item.nullable = false;
                Col::List(ListCol {
                    name: name.to_string(),
                    nullable,
                    validity: Vec::new(),
                    offsets: vec![0],
                    item: Box::new(Col::Struct(item)),
                })
            }
            _ => Col::Leaf(ColumnBuilder::new(column_for(name, schema, names)?)),
        },
        _ => Col::Leaf(ColumnBuilder::new(column_for(name, schema, names)?)),
    })
}

impl Col {
    pub(super) fn name(&self) -> &str {
        match self {
            Col::Leaf(c) => &c.spec.name,
            Col::Struct(s) => &s.name,
            Col::List(l) => &l.name,
        }
    }

    pub(super) fn field(&self) -> Field {
        match self {
            Col::Leaf(c) => c.spec.field(),
            Col::Struct(s) => Field::new(&s.name, DataType::Struct(s.fields()), s.nullable),
            Col::List(l) => Field::new(&l.name, DataType::List(Arc::new(l.item.field())), l.nullable),
        }
    }

    pub(super) fn rows(&self) -> usize {
        match self {
            Col::Leaf(c) => c.rows(),
            Col::Struct(s) => s.rows,
            Col::List(l) => l.offsets.len() - 1,
        }
    }

    /// The leaf builder of a scalar or number-list column.
    pub(super) fn leaf(&mut self) -> Option<&mut ColumnBuilder> {
        match self {
            Col::Leaf(c) => Some(c),
            _ => None,
        }
    }

    /// Appends a null row, or fails if the column is not nullable.
    pub(super) fn push_null(&mut self) -> Result<(), String> {
        match self {
            Col::Leaf(c) => c.push_null(),
            Col::Struct(s) => {
                if !s.nullable {
                    return Err(format!("field '{}' is null or missing but not nullable", s.name));
                }
                for c in &mut s.children {
                    c.push_placeholder()?;
                }
                s.validity.push(false);
                s.rows += 1;
                Ok(())
            }
            Col::List(l) => {
                if !l.nullable {
                    return Err(format!("field '{}' is null or missing but not nullable", l.name));
                }
                l.offsets.push(*l.offsets.last().expect("offsets start at 0"));
                l.validity.push(false);
                Ok(())
            }
        }
    }

    /// The row under a null struct: null where the column is nullable, else a zero value.
    fn push_placeholder(&mut self) -> Result<(), String> {
        let nullable = match self {
            Col::Leaf(c) => c.spec.nullable,
            Col::Struct(s) => s.nullable,
            Col::List(l) => l.nullable,
        };
        if nullable {
            return self.push_null();
        }
        match self {
            Col::Leaf(c) => {
                let ty = c.spec.ty;
                if c.spec.shape == Shape::Scalar {
                    match ty {
                        ScalarType::Bool => c.values.push_bool(false, ty)?,
                        ScalarType::Utf8 => c.values.push_str("", ty)?,
                        ScalarType::Binary => c.values.push_bytes(b"", ty)?,
                        _ => c.values.push_num(Num::I(0), ty)?,
                    }
                }
                c.end_row()
            }
            Col::Struct(s) => {
                for c in &mut s.children {
                    c.push_placeholder()?;
                }
                s.end_row();
                Ok(())
            }
            Col::List(l) => {
                l.offsets.push(*l.offsets.last().expect("offsets start at 0"));
                Ok(())
            }
        }
    }

    /// Drops everything after the first `rows` rows (undo of a half-decoded message).
    pub(super) fn truncate(&mut self, rows: usize) {
        match self {
            Col::Leaf(c) => c.truncate(rows),
            Col::Struct(s) => {
                s.rows = s.rows.min(rows);
                if s.nullable {
                    s.validity.truncate(s.rows);
                }
                // Children may hold part of a row the struct never ended.
                let rows = s.rows;
                for c in &mut s.children {
                    c.truncate(rows);
                }
            }
            Col::List(l) => {
                l.offsets.truncate(rows + 1);
                if l.nullable {
                    l.validity.truncate(l.offsets.len() - 1);
                }
                let items = *l.offsets.last().expect("offsets start at 0") as usize;
                l.item.truncate(items);
            }
        }
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        fn nulls(nullable: bool, validity: &mut Vec<bool>) -> Option<NullBuffer> {
            let validity = std::mem::take(validity);
            nullable
                .then(|| NullBuffer::from(validity))
                .filter(|n| n.null_count() > 0)
        }
        match self {
            Col::Leaf(c) => c.finish(),
            Col::Struct(s) => {
                let rows = std::mem::take(&mut s.rows);
                let nulls = nulls(s.nullable, &mut s.validity);
                if s.children.is_empty() {
                    return Arc::new(StructArray::new_empty_fields(rows, nulls));
                }
                let fields = s.fields();
                let arrays = s.children.iter_mut().map(Col::finish).collect();
                Arc::new(StructArray::new(fields, arrays, nulls))
            }
            Col::List(l) => {
                let nulls = nulls(l.nullable, &mut l.validity);
                let item = Arc::new(l.item.field());
                let offsets = std::mem::replace(&mut l.offsets, vec![0]);
                let values = l.item.finish();
                Arc::new(ListArray::new(
                    item,
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    values,
                    nulls,
                ))
            }
        }
    }
}

impl StructCol {
    fn fields(&self) -> Fields {
        self.children.iter().map(Col::field).collect()
    }

    /// Marks the end of a non-null row whose children were all appended.
    pub(super) fn end_row(&mut self) {
        if self.nullable {
            self.validity.push(true);
        }
        self.rows += 1;
    }
}

impl ListCol {
    /// Marks the end of a non-null row whose items were appended.
    pub(super) fn end_row(&mut self) -> Result<(), String> {
        let items = offset_i32(self.item.rows())?;
        self.offsets.push(items);
        if self.nullable {
            self.validity.push(true);
        }
        Ok(())
    }
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
            .map(|f| {
                col_for(
                    &f.name,
                    &f.schema,
                    resolved.get_names(),
                    &mut vec![record.name.fullname(None)],
                )
            })
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
            append_value(col, v).map_err(|(path, e)| format!("field '{}{path}': {e}", col.name()))?;
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

/// Appends a resolved value to a column of any kind. An error is the path below the column
/// (`.meta.ts`, empty at the column itself) and what is wrong.
fn append_value(col: &mut Col, v: &Value) -> Result<(), (String, String)> {
    let v = match v {
        Value::Union(_, inner) => inner.as_ref(),
        v => v,
    };
    let here = |e: String| (String::new(), e);
    match (col, v) {
        (Col::Leaf(c), v) => append(c, v).map_err(here),
        (col, Value::Null) => col.push_null().map_err(here),
        (Col::Struct(s), Value::Record(fields)) => {
            if fields.len() != s.children.len() {
                return Err(here(format!(
                    "a record of {} fields for {} columns",
                    fields.len(),
                    s.children.len()
                )));
            }
            for (child, (_, v)) in s.children.iter_mut().zip(fields) {
                append_value(child, v).map_err(|(path, e)| (format!(".{}{path}", child.name()), e))?;
            }
            s.end_row();
            Ok(())
        }
        (Col::List(l), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                append_value(&mut l.item, item).map_err(|(path, e)| (format!("[{i}]{path}"), e))?;
            }
            l.end_row().map_err(here)
        }
        (_, other) => Err(here(format!("unsupported Avro value {other:?}"))),
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
        self.columns.iter().map(|c| Arc::new(c.field())).collect()
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
    use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
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
}
