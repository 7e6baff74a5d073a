//! `protobuf`: Protobuf messages, plain or in the Confluent Schema Registry wire format, decoded
//! into Arrow columns and encoded from them, with what a producer registers.

mod columns;
mod decode;
mod encode;
mod read_plan;
pub mod registration;
mod schema;
mod storage;
mod wire;
mod write_plan;

pub(crate) use columns::wrapped;
pub use decode::ProtobufDecoder;
pub(super) use encode::encode_protobuf;
pub use schema::{load_message, message_indexes, subject_message, write_message_indexes, ProtoSource};
