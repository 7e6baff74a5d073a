//! Offsets outside a reading consumer: committing a checkpoint's positions to a consumer group and
//! reading them back (the process that saves a checkpoint is not always the one that read the
//! data: DataLoader workers read, the main process checkpoints), and partitions' watermarks
//! (consumer lag).

use crate::client::{await_cluster, config_value, until_answered, ClientSettings};
use crate::consumer::{new_consumer, PlainContext};
use crate::error::{Error, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// Commits `offsets` (the next offset to read, per topic partition) for the config's `group.id`,
/// synchronously: when this returns, the group's committed offsets are these.
pub fn commit_offsets(
    config: &ClientSettings,
    offsets: &[(TopicPartition, i64)],
    timeout: Duration,
) -> Result<()> {
    if config_value(config, "group.id").is_none() {
        return Err(Error::Config(
            "committing offsets needs a 'group.id' in the config".into(),
        ));
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if *offset < 0 {
            return Err(Error::Config(format!(
                "cannot commit offset {offset} for topic '{topic}' partition {partition}"
            )));
        }
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|e| Error::kafka(format!("bad offset for '{topic}' [{partition}]"), e))?;
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let consumer = new_consumer(config, PlainContext::default())?;
    await_cluster(&consumer, config, timeout)?;
    let group = config_value(config, "group.id").unwrap_or_default();
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| Error::kafka("cannot commit offsets", e).denied(format!("group '{group}'"), "read"))
}

/// The group's committed offsets of `partitions`; `None` where the group has committed nothing.
pub fn committed_offsets(
    config: &ClientSettings,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<(TopicPartition, Option<i64>)>> {
    if config_value(config, "group.id").is_none() {
        return Err(Error::Config(
            "reading committed offsets needs a 'group.id' in the config".into(),
        ));
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let consumer = new_consumer(config, PlainContext::default())?;
    await_cluster(&consumer, config, timeout)?;
    let group = config_value(config, "group.id").unwrap_or_default();
    let committed = until_answered(&consumer, config, timeout, |slice| {
        consumer.committed_offsets(tpl.clone(), slice)
    })
    .map_err(|e| {
        e.into_error("cannot fetch committed offsets")
            .denied(format!("group '{group}'"), "describe")
    })?;
    Ok(partitions
        .iter()
        .map(|(topic, partition)| {
            let offset = match committed.find_partition(topic, *partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            ((topic.clone(), *partition), offset)
        })
        .collect())
}

/// The low and high watermarks (first offset, next offset to be written) of `partitions`.
pub fn watermarks(
    config: &ClientSettings,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> Result<Vec<(TopicPartition, (i64, i64))>> {
    let consumer = new_consumer(config, PlainContext::default())?;
    await_cluster(&consumer, config, timeout)?;
    partitions
        .iter()
        .map(|(topic, partition)| {
            consumer
                .fetch_watermarks(topic, *partition, timeout)
                .map(|w| ((topic.clone(), *partition), w))
                .map_err(|e| {
                    Error::kafka(
                        format!("cannot fetch the watermarks of '{topic}' [{partition}]"),
                        e,
                    )
                    .denied(format!("topic '{topic}'"), "describe")
                })
        })
        .collect()
}
