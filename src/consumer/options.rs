//! What a dataset reads and how: the options `KafkaDataset` takes, as the core sees them.

use super::batch::{MetaColumn, OffsetMap};
use crate::client::ClientSettings;
use crate::format::FormatSpec;
use std::time::Duration;

/// What to read.
#[derive(Debug, Clone)]
pub enum Source {
    /// Every partition of these topics.
    Topics(Vec<String>),
    /// Exactly these partitions.
    Partitions(Vec<(String, i32)>),
}

/// A position in every partition.
#[derive(Debug, Clone)]
pub enum Position {
    Earliest,
    Latest,
    /// The consumer group's committed offset (start only); `auto.offset.reset` where none.
    Committed,
    /// The first message at or after this time (milliseconds since the epoch).
    Timestamp(i64),
    /// Explicit offsets for some partitions; the others use `default`.
    Offsets {
        offsets: OffsetMap,
        default: Box<Position>,
    },
}

/// What to do with a message that cannot be decoded.
#[derive(Debug, Clone)]
pub enum ErrorPolicy {
    /// Stop: hand out the rows before it, then fail with its position and the reason.
    Raise,
    /// Skip it, counting it.
    Skip,
    /// Write its raw key, value and headers plus the reason to this topic, then go on. The
    /// dead-lettered message is acknowledged before any offset past it is handed out.
    DeadLetter { topic: String },
}

#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// librdkafka properties (`bootstrap.servers`, `group.id`, ...) and OAUTHBEARER tokens.
    pub config: ClientSettings,
    pub source: Source,
    pub format: FormatSpec,
    pub metadata: Vec<MetaColumn>,
    pub batch_size: usize,
    pub max_wait: Duration,
    pub start: Position,
    /// `None`: stream forever.
    pub end: Option<Position>,
    pub on_error: ErrorPolicy,
    pub queue_bytes: usize,
    /// With a `group.id`: commit what was handed out to the group (false when the offsets go
    /// to the group through a producer transaction instead).
    pub commit: bool,
    /// Bound on metadata, watermark and commit round trips.
    pub timeout: Duration,
}

/// One partition of the plan. `end` is exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: Option<i64>,
}
