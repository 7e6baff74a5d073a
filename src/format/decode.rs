//! Payload decoders: one Kafka message → one row appended to column storage.
//!
//! A decoder either appends exactly one row or fails with a reason and appends nothing, so a bad
//! message never corrupts the batch it would have joined. The same formats are written by the
//! producer's encoders.

use crate::error::{Error, Result};
use crate::format::columns::{ColumnSpec, ScalarType};
use crate::registry::SchemaRegistry;
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use std::sync::Arc;

use super::{
    framed, tensor, AvroDecoder, DebeziumDecoder, JsonDecoder, ProtobufDecoder, RawDecoder, TensorDecoder,
};

/// Field metadata key that holds a tensor column's per-row shape.
pub fn tensor_shape_key() -> &'static str {
    tensor::SHAPE_METADATA_KEY
}

/// How message values are laid out.
#[derive(Debug, Clone)]
pub enum FormatSpec {
    /// Raw little-endian fixed-shape arrays: every message is exactly `prod(shape)` elements.
    Tensor { dtype: ScalarType, shape: Vec<usize> },
    /// JSON objects decoded against declared columns.
    Json { columns: Vec<ColumnSpec> },
    /// Avro records. `schema` is the reader schema and defines the columns. With
    /// `registry_schemas`, values use the Confluent wire format (magic byte 0, 4-byte big-endian
    /// schema id) and are decoded with the writer schema of that id.
    Avro {
        schema: String,
        /// The named types `schema` refers to without defining them (its registry subject's
        /// references), in definition order.
        named: Vec<String>,
        registry_schemas: Vec<(u32, String)>,
        /// Where the writer schemas of ids not in `registry_schemas` are fetched.
        registry: Option<Arc<SchemaRegistry>>,
    },
    /// JSON Schema values in the Confluent wire format: each JSON object behind magic byte 0
    /// and its schema id (checked against `registry`, when given, to name a JSON schema).
    JsonSchema {
        columns: Vec<ColumnSpec>,
        registry: Option<Arc<SchemaRegistry>>,
    },
    /// Protobuf messages; `message` is the reader message and defines the columns. With a
    /// `registry`, values use the Confluent wire format (magic byte 0, 4-byte big-endian schema
    /// id, message indexes) and are decoded with the writer message the id and indexes name.
    Protobuf {
        message: prost_reflect::MessageDescriptor,
        registry: Option<Arc<SchemaRegistry>>,
    },
    /// Key and value bytes as binary columns.
    Raw,
    /// Debezium change events (JSON): the row's declared columns, then `__op`,
    /// `__source_ts_ms` and `__lsn`. Tombstones produce no row and are counted.
    Debezium { columns: Vec<ColumnSpec> },
}

/// Decodes message payloads into Arrow columns.
pub trait Decoder: Send {
    /// The columns this decoder produces, in order.
    fn fields(&self) -> Vec<FieldRef>;
    /// Appends one row for the message, or returns why it cannot and appends nothing.
    fn decode(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> std::result::Result<(), String>;
    /// Returns the columns of the rows decoded so far and starts a new batch.
    fn finish(&mut self) -> Vec<ArrayRef>;
    /// Decodes these payloads ahead, in parallel, before the same payloads are passed to `decode`
    /// one by one in order (some may never be: a caller may skip messages). `decode` of a
    /// prepared payload, recognized by its address and length, takes the row or the error
    /// decoded ahead. Only formats costly enough per message to gain from a second thread
    /// implement it; an empty slice forgets what was prepared.
    fn prepare(&mut self, _payloads: &[Option<&[u8]>]) {}
    /// Whether `prepare` does anything (callers skip collecting payloads otherwise).
    fn decodes_ahead(&self) -> bool {
        false
    }
    /// After a failed `decode`: the failure outside the message that caused it (the schema
    /// registry could not be reached), taken once. The read then stops with this error rather
    /// than skip or dead-letter a message that is not at fault.
    fn take_unavailable(&mut self) -> Option<Error> {
        None
    }
    /// Whether a message without a value is a tombstone that produces no row (the batch builder
    /// counts it) rather than a message to decode. Formats whose null values mean something
    /// else, or nothing valid, leave this `false`, and such a message is a decode error.
    fn skips_tombstones(&self) -> bool {
        false
    }
}

impl FormatSpec {
    pub fn decoder(&self) -> Result<Box<dyn Decoder>> {
        Ok(match self {
            FormatSpec::Tensor { dtype, shape } => Box::new(TensorDecoder::new(*dtype, shape.clone())?),
            FormatSpec::Json { columns } => Box::new(JsonDecoder::new(columns.clone())?),
            FormatSpec::Avro {
                schema,
                named,
                registry_schemas,
                registry,
            } => Box::new(
                AvroDecoder::new(schema, named, registry_schemas, registry.clone()).map_err(Error::Config)?,
            ),
            FormatSpec::JsonSchema { columns, registry } => Box::new(framed::FramedDecoder::new(
                Box::new(JsonDecoder::new(columns.clone())?),
                crate::registry::SchemaType::Json,
                registry.clone(),
            )),
            FormatSpec::Protobuf { message, registry } => {
                Box::new(ProtobufDecoder::new(message.clone(), registry.clone()).map_err(Error::Config)?)
            }
            FormatSpec::Raw => Box::new(RawDecoder::default()),
            FormatSpec::Debezium { columns } => Box::new(DebeziumDecoder::new(columns.clone())?),
        })
    }
}

/// The value of a message, or the reason it has none.
pub(crate) fn require_value(value: Option<&[u8]>) -> std::result::Result<&[u8], String> {
    value.ok_or_else(|| "message has no value (a tombstone)".to_string())
}
