//! A client of the Schema Registry REST API (Confluent's; Apicurio serves it at
//! `/apis/ccompat/v7`, Karapace and Redpanda at their root).
//!
//! Readers resolve a writer schema by the id every framed value carries; producers look up or
//! register their schema under a subject. Both happen on whichever thread needs them — the
//! reader's poll thread, never holding the GIL — so the client is blocking and shared (`Arc`):
//! each id is fetched once and cached for the client's life (a registry never changes what an
//! id means), and a request that fails for a transient reason (connection refused, timeout,
//! 5xx, 429) is retried a few times before it becomes an error.
//!
//! Credentials (basic auth or a bearer token) are registered as secrets (`client::register_secret`)
//! and so scrubbed from every message; URLs are shown without their user info.
//!
//! `settings`: how to reach a registry (URL, credentials, TLS trust); `client`: the shared,
//! caching REST client.

mod client;
mod settings;

pub use client::SchemaRegistry;
pub use settings::{RegistryAuth, RegistrySettings};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The Confluent wire format: magic byte 0, then the schema id (4 bytes, big-endian).
pub const WIRE_MAGIC: u8 = 0;
/// Bytes of the Confluent header before a value's body (Protobuf adds message indexes after it).
pub const WIRE_HEADER: usize = 5;

/// The kind of a registered schema (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchemaType {
    #[default]
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            "JSON" => Ok(SchemaType::Json),
            other => Err(Error::Config(format!(
                "unknown schema type '{other}' (expected AVRO, PROTOBUF or JSON)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
        }
    }
}

/// A schema that references another subject's version (Avro named types, Protobuf imports,
/// JSON Schema `$ref`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub id: u32,
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<SchemaReference>,
    /// The subject version, where the request named one (`latest`, by version, lookup).
    pub version: Option<i32>,
}

/// Why the schema of a value cannot be used, by whose fault: the rule every decoder follows, so
/// that a registry that is down never makes a value look bad (and be skipped or dead-lettered).
#[derive(Debug)]
pub enum SchemaFailure {
    /// The id, or a schema it references, is not in the registry, or the schema is unusable:
    /// the value's fault; it follows `on_error`.
    Bad(String),
    /// The registry could not answer: the read stops before the value, skipping nothing.
    Unavailable(Error),
}

impl SchemaFailure {
    /// The same failure, a `Bad` reason prefixed with what it is about.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            SchemaFailure::Bad(reason) => SchemaFailure::Bad(format!("{what}: {reason}")),
            unavailable => unavailable,
        }
    }

    /// The value's decode error; an unavailable registry is also kept in `unavailable`, which the
    /// engine takes (`Decoder::take_unavailable`) to stop the read instead of applying `on_error`.
    pub fn into_decode_error(self, unavailable: &mut Option<Error>) -> String {
        match self {
            SchemaFailure::Bad(reason) => reason,
            SchemaFailure::Unavailable(e) => {
                let reason = e.to_string();
                *unavailable = Some(e);
                reason
            }
        }
    }
}
