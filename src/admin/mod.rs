//! Cluster administration the library needs itself: topics (the compacted model topic), offsets
//! outside a reading consumer (checkpoints, watermarks), and the embedded (mock) cluster.

pub(crate) mod embedded;
pub(crate) mod offsets;
mod topics;

pub use embedded::EmbeddedCluster;
pub use topics::{create_topic, TopicCreation, TopicSpec};
