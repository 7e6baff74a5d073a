//! `protobuf`: Protobuf messages, plain or in the Confluent Schema Registry wire format, decoded
//! into Arrow columns and encoded from them, with what a producer registers.

mod decode;
mod encode;
pub mod registration;

pub(crate) use decode::wrapped;
pub use decode::{
    load_message, message_indexes, subject_message, write_message_indexes, ProtoSource, ProtobufDecoder,
};
pub(super) use encode::encode_protobuf;
