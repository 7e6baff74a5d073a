//! Cluster administration the library needs itself: topics (the compacted model topic), offsets
//! outside a reading consumer (checkpoints, watermarks), and the embedded (mock) cluster.

pub mod embedded;
pub mod offsets;
pub mod topics;

pub use embedded::EmbeddedCluster;
pub use topics::{create_topic, TopicCreation, TopicSpec};
