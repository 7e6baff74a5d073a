//! `avro`: Avro records, plain or in the Confluent Schema Registry wire format, decoded straight
//! into Arrow columns by a plan per writer schema (`read_plan`), and written by a plan compiled
//! once per send (`write_plan`).

mod decode;
mod encode;
mod read_plan;
mod reader_columns;
mod write_plan;

pub use decode::{referenced_schemas, AvroDecoder};
pub(super) use encode::encode;
