//! The consumer engine behind `KafkaDataset`.
//!
//! `Dataset::open` validates the configuration and resolves the read plan: which partitions, and
//! for a bounded read the exact start and end offset of each (the end is a snapshot taken once, so
//! every pass over the dataset reads the same messages). `Dataset::reader` starts one pass: a
//! background thread polls librdkafka, decodes straight into Arrow columns, and hands finished
//! batches to the reader through a queue bounded in bytes.
//!
//! Offsets: the reader tracks, per partition, the next offset after everything the user has
//! received (`delivered`). With a `group.id`, offsets are committed only from that map, so a crash
//! never commits data the user did not get (at-least-once). On a rebalance, what was delivered for
//! the revoked partitions is committed before they go.
//!
//! The parts, one job per file:
//! - `options`: what to read and how (`DatasetOptions`), and the plan's unit (`PartitionRange`);
//! - `plan`: resolving partitions and positions to exact offsets;
//! - `base`: building a librdkafka consumer, and closing it promptly;
//! - `shared`: the state the reader, the consumer thread and the rebalance callback share (what
//!   was delivered, owned and committed), and the group context that commits before a revoke;
//! - `reader`: one pass as the user sees it (`Reader`);
//! - `engine`: the consumer thread's poll loop; `dead_letter`: where undecodable messages go;
//! - `batch`: record batches built from messages; `queue`: the byte-bounded hand-off;
//!   `batch_consume`: librdkafka's batch consume API.

mod base;
pub mod batch;
mod batch_consume;
mod dead_letter;
mod engine;
mod options;
mod plan;
mod queue;
mod reader;
mod shared;

pub(crate) use base::{new_consumer, ClosingConsumer, PlainContext};
pub use options::{DatasetOptions, ErrorPolicy, PartitionRange, Position, Source};
pub use reader::{Arrival, Next, Reader, ReaderStats, Waiter};

use self::batch::{BatchBuilder, OffsetMap};
use crate::client::{await_cluster, config_value};
use crate::error::{Error, Result};
use arrow_schema::SchemaRef;

/// The validated options and the resolved read plan.
pub struct Dataset {
    options: DatasetOptions,
    /// `None` when partitions come from the consumer group (subscribe mode).
    plan: Option<Vec<PartitionRange>>,
    schema: SchemaRef,
}

impl Dataset {
    pub fn open(options: DatasetOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let schema = BatchBuilder::new(options.format.decoder()?, &options.metadata)?.schema();
        if let (ErrorPolicy::DeadLetter { topic }, Source::Topics(ts)) = (&options.on_error, &options.source)
        {
            if ts.contains(topic) {
                return Err(Error::Config(format!(
                    "dead-letter topic '{topic}' is also a source topic"
                )));
            }
        }
        let consumer = new_consumer(&options.config, PlainContext::default())?;
        await_cluster(&consumer, &options.config, options.timeout)?;
        let group = config_value(&options.config, "group.id").is_some();
        let subscribe = group
            && options.end.is_none()
            && matches!(options.source, Source::Topics(_))
            && matches!(options.start, Position::Committed);
        if matches!(options.start, Position::Committed) && !group {
            return Err(Error::Config(
                "start='committed' needs a 'group.id' in the config".into(),
            ));
        }
        // Resolve metadata even in subscribe mode: unknown topics and unreachable brokers fail
        // here, with a clear error, rather than as a silent empty stream.
        let partitions = plan::resolve_partitions(&consumer, &options.source, options.timeout)?;
        let plan = if subscribe {
            None
        } else {
            Some(plan::resolve_plan(&consumer, &options, &partitions)?)
        };
        Ok(Dataset {
            options,
            plan,
            schema,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn plan(&self) -> Option<&[PartitionRange]> {
        self.plan.as_deref()
    }

    pub fn is_bounded(&self) -> bool {
        self.options.end.is_some()
    }

    /// Number of offsets in a bounded read (messages, less any compacted away or transaction
    /// markers).
    pub fn len(&self) -> Option<u64> {
        let plan = self.plan.as_ref()?;
        plan.iter()
            .map(|r| r.end.map(|e| (e - r.start).max(0) as u64))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Starts one pass over the data; `resume` overrides start offsets (from a `state_dict`).
    pub fn reader(&self, resume: Option<&OffsetMap>) -> Result<Reader> {
        Reader::start(&self.options, self.plan.clone(), resume, self.schema.clone())
    }
}
