//! Values in the Confluent wire format (magic byte 0, 4-byte big-endian schema id) around a
//! payload another decoder reads: the `json_schema` format is JSON objects framed this way.
//!
//! With a registry, each id is checked once to name a schema of the expected type; an id the
//! registry does not know, or a schema of another type, is that message's decode error, and a
//! registry that cannot answer stops the read (`take_unavailable`).

use super::Decoder;
use crate::error::Error;
use crate::registry::{SchemaRegistry, SchemaType, WIRE_HEADER, WIRE_MAGIC};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use std::collections::HashSet;
use std::sync::Arc;

pub struct FramedDecoder {
    inner: Box<dyn Decoder>,
    schema_type: SchemaType,
    registry: Option<Arc<SchemaRegistry>>,
    /// Ids already found to name a schema of `schema_type`.
    accepted: HashSet<u32>,
    unavailable: Option<Error>,
}

impl FramedDecoder {
    pub fn new(
        inner: Box<dyn Decoder>,
        schema_type: SchemaType,
        registry: Option<Arc<SchemaRegistry>>,
    ) -> Self {
        FramedDecoder {
            inner,
            schema_type,
            registry,
            accepted: HashSet::new(),
            unavailable: None,
        }
    }

    /// The payload after a well-formed header, or why the header is wrong.
    fn body<'a>(&mut self, value: &'a [u8]) -> Result<&'a [u8], String> {
        if value.len() < WIRE_HEADER || value[0] != WIRE_MAGIC {
            return Err("not in the Confluent wire format (magic byte 0 + 4-byte schema id)".into());
        }
        let id = u32::from_be_bytes(value[1..WIRE_HEADER].try_into().expect("4 bytes"));
        if let Some(registry) = &self.registry {
            if !self.accepted.contains(&id) {
                match registry.value_schema(id) {
                    Ok(found) if found.schema_type == self.schema_type => {
                        self.accepted.insert(id);
                    }
                    Ok(found) => {
                        return Err(format!(
                            "schema id {id} is a {} schema in the registry, not {}",
                            found.schema_type.name(),
                            self.schema_type.name()
                        ))
                    }
                    Err(failure) => return Err(failure.into_decode_error(&mut self.unavailable)),
                }
            }
        }
        Ok(&value[WIRE_HEADER..])
    }
}

impl Decoder for FramedDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        self.inner.fields()
    }

    fn decode(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            Some(v) => {
                let body = self.body(v)?;
                self.inner.decode(key, Some(body))
            }
            None => self.inner.decode(key, None),
        }
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.inner.finish()
    }

    /// The inner decoder prepares the bodies of well-formed values (it recognizes them by
    /// address and length, which `decode` passes on unchanged); the others are not prepared and
    /// fail in `decode`.
    fn prepare(&mut self, payloads: &[Option<&[u8]>]) {
        let bodies: Vec<Option<&[u8]>> = payloads
            .iter()
            .map(|p| {
                p.filter(|v| v.len() >= WIRE_HEADER && v[0] == WIRE_MAGIC)
                    .map(|v| &v[WIRE_HEADER..])
            })
            .collect();
        self.inner.prepare(&bodies);
    }

    fn decodes_ahead(&self) -> bool {
        self.inner.decodes_ahead()
    }

    fn take_unavailable(&mut self) -> Option<Error> {
        self.unavailable.take().or_else(|| self.inner.take_unavailable())
    }

    fn skips_tombstones(&self) -> bool {
        self.inner.skips_tombstones()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::columns::ColumnSpec;
    use crate::format::JsonDecoder;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    #[test]
    fn strips_the_header_and_rejects_unframed_values() {
        let json = JsonDecoder::new(vec![ColumnSpec::parse("id", "int64").unwrap()]).unwrap();
        let mut d = FramedDecoder::new(Box::new(json), SchemaType::Json, None);
        d.decode(None, Some(b"\x00\x00\x00\x00\x07{\"id\": 5}")).unwrap();
        let err = d.decode(None, Some(b"{\"id\": 6}")).unwrap_err();
        assert!(err.contains("Confluent wire format"), "{err}");
        assert!(d
            .decode(None, Some(b"\x00\x00\x00\x00\x07{\"id\": \"x\"}"))
            .is_err());
        assert_eq!(d.finish()[0].as_primitive::<Int64Type>().values(), &[5]);
    }
}
