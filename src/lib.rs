//! kafka-ml: Apache Kafka as a data source and sink for machine learning.
//!
//! The pyo3-free core (everything but `py`) compiles and is tested with `cargo test`. It is laid
//! out by feature; a feature's binding in `py` carries the same name:
//! - [`client`]: the librdkafka settings every client starts from, secrets, OAUTHBEARER tokens;
//! - [`consumer`]: the engine behind `KafkaDataset` (options, plans, the consumer thread, commits
//!   and rebalances, the byte-bounded queue, librdkafka's batch consume API, record batches);
//! - [`producer`]: delivery-tracked producing, and table sends (Arrow in, one message per row);
//! - [`format`]: payload formats, each format's decoder (message → Arrow columns) beside its
//!   encoder (Arrow rows → messages), and the declared columns and column storage;
//! - [`admin`]: topic creation (the compacted model topic), offsets outside a reading consumer,
//!   the embedded (mock) cluster;
//! - [`registry`]: the Schema Registry client (writer schemas by id, subjects, registration);
//! - [`headers`]: the names of the headers kafka-ml writes (dead letters, lineage of results);
//! - [`error`]: the one error type, mapped to Python exceptions in one place (`py/errors.rs`).
//!
//! `py` holds the bindings only: argument conversion, GIL release, error mapping.

pub mod admin;
pub mod client;
pub mod consumer;
pub mod error;
pub mod format;
pub mod headers;
pub mod producer;
pub mod registry;

mod py;
