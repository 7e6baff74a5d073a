//! Payload formats: how a Kafka message value becomes Arrow columns (decoders) and how Arrow rows
//! become message values (encoders). Each format keeps its decoder and its encoder side by side,
//! so a topic written in a format with declared columns reads back with the same declarations.
//!
//! - `decode`: the `Decoder` trait and `FormatSpec`, what a reader is told to decode;
//! - `encode`: `EncodeFormat`, `EncodedRows` and the checks every send makes (`conform`);
//! - one module per format: `tensor`, `json`, `avro`, `protobuf`, `raw`, `debezium` (read
//!   only: Kafka Connect's change events) and `framed` (the Confluent wire-format header in front
//!   of another format);
//! - [`columns`]: declared columns (`ColumnSpec`) and the column storage decoders append to.

pub mod columns;
mod decode;
mod encode;

mod avro;
mod debezium;
mod framed;
mod json;
pub(crate) mod protobuf;
mod raw;
mod tensor;
#[cfg(test)]
mod test_rng;

pub use avro::{referenced_schemas as avro_referenced_schemas, AvroDecoder};
pub use debezium::DebeziumDecoder;
pub(crate) use decode::require_value;
pub use decode::{tensor_shape_key, Decoder, FormatSpec};
pub use encode::{conform, encode, keys_from_column, EncodeFormat, EncodedRows};
pub use json::JsonDecoder;
pub use json::{json_row_bound, validate_json};
pub use protobuf::{registration as protobuf_registration, ProtoSource, ProtobufDecoder};
pub use raw::RawDecoder;
pub use tensor::TensorDecoder;
