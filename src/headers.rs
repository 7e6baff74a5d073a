//! The names of the headers kafka-ml writes, defined once for both languages: the Rust consumer
//! writes them on its dead letters, and `kafka_ml.headers` (the inference loop's results and
//! dead letters) takes them from here through the native module.

/// Why a message was dead-lettered (its decode error, or the predict error).
pub const ERROR: &str = "kafka_ml.error";
/// The topic of the input a result or dead letter comes from.
pub const SOURCE_TOPIC: &str = "kafka_ml.source.topic";
/// The partition of that input.
pub const SOURCE_PARTITION: &str = "kafka_ml.source.partition";
/// The offset of that input.
pub const SOURCE_OFFSET: &str = "kafka_ml.source.offset";
/// The model version that predicted a result.
pub const MODEL_VERSION: &str = "kafka_ml.model.version";
