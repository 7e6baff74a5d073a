//! `avro`: Avro binary records, plain or in the Confluent Schema Registry wire format.

use super::read_plan::Plan;
use super::reader_columns::{append_value, col_for, Col};
use crate::error::Error;
use crate::format::{require_value, Decoder};
use crate::registry::{SchemaFailure, SchemaRegistry, SchemaType, WIRE_HEADER, WIRE_MAGIC};
use apache_avro::schema::ResolvedSchema;
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
    columns: Vec<Col>,
    rows: usize,
}

/// A writer schema and the named types it refers to but does not define (its registry
/// references), which decoding its values needs.
struct Writer {
    schema: Schema,
    named: Vec<Schema>,
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
mod tests;
