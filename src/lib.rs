//! kafka-ml: Apache Kafka as a data source and sink for machine learning.
//!
//! The pyo3-free core (everything but `py`) compiles and is tested with `cargo test`:
//! - [`client`]: the librdkafka settings every client starts from;
//! - [`dataset`]: the consumer engine (plans, background polling, offsets, commits);
//! - [`decode`]: payload formats → Arrow columns; [`encode`]: Arrow rows → payloads; [`batch`]: record batches with metadata;
//! - [`batch_consume`]: librdkafka's batch consume API for assigned, non-committing readers;
//! - [`queue`]: the byte-bounded hand-off; [`producer`]: delivery-tracked producing;
//! - [`embedded`]: the in-process mock cluster; [`admin`]: topic creation (the compacted model topic);
//! - [`offsets`]: checkpoint commits and watermarks;
//! - [`registry`]: the Schema Registry client (writer schemas by id, subjects, registration).
//!
//! `py` holds the bindings only: argument conversion, GIL release, error mapping.

pub mod admin;
pub mod batch;
pub mod batch_consume;
pub mod client;
pub mod dataset;
pub mod decode;
pub mod embedded;
pub mod encode;
pub mod error;
pub mod offsets;
pub mod producer;
pub mod queue;
pub mod registry;
pub mod schema;

mod py;
