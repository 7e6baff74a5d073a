//! The read plan: which partitions a source names, and the exact offset each position means in
//! each of them (a bounded read's end is a snapshot taken once, so every pass reads the same
//! messages).

use super::options::{DatasetOptions, PartitionRange, Position, Source};
use crate::client::{config_value, until_answered, ClientSettings, HasHooks};
use crate::error::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub(super) fn resolve_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    source: &Source,
    timeout: Duration,
) -> Result<Vec<(String, i32)>> {
    let topics: BTreeSet<&str> = match source {
        Source::Topics(t) => t.iter().map(String::as_str).collect(),
        Source::Partitions(p) => p.iter().map(|(t, _)| t.as_str()).collect(),
    };
    if topics.is_empty() {
        return Err(Error::Config("no topic to read".into()));
    }
    let mut found: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for topic in &topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::kafka(format!("cannot fetch metadata of topic '{topic}'"), e))?;
        let t = md.topics().iter().find(|t| t.name() == *topic);
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                found.insert(topic, t.partitions().iter().map(|p| p.id()).collect());
            }
            Some(t)
                if t.error().map(RDKafkaErrorCode::from)
                    == Some(RDKafkaErrorCode::TopicAuthorizationFailed) =>
            {
                return Err(Error::kafka(
                    format!("cannot read the metadata of topic '{topic}'"),
                    KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed),
                )
                .denied(format!("topic '{topic}'"), "describe"));
            }
            Some(t) => {
                let code = t
                    .error()
                    .map(RDKafkaErrorCode::from)
                    .unwrap_or(RDKafkaErrorCode::UnknownTopicOrPartition);
                return Err(Error::UnknownTopic {
                    what: format!("topic '{topic}' ({code})"),
                    kafka: Some(crate::error::KafkaCode::from_code(code)),
                });
            }
            None => {
                return Err(Error::UnknownTopic {
                    what: format!("topic '{topic}'"),
                    kafka: None,
                })
            }
        }
    }
    Ok(match source {
        Source::Topics(ts) => ts
            .iter()
            .flat_map(|t| found[t.as_str()].iter().map(move |p| (t.clone(), *p)))
            .collect(),
        Source::Partitions(ps) => {
            for (t, p) in ps {
                if !found[t.as_str()].contains(p) {
                    return Err(Error::UnknownTopic {
                        what: format!(
                            "topic '{t}' has no partition {p} (it has {})",
                            found[t.as_str()].len()
                        ),
                        kafka: Some(crate::error::KafkaCode::from_code(
                            RDKafkaErrorCode::UnknownPartition,
                        )),
                    });
                }
            }
            ps.clone()
        }
    })
}

/// Resolves a position to an exact offset in each partition.
fn resolve_offsets<C: ConsumerContext + HasHooks>(
    consumer: &BaseConsumer<C>,
    position: &Position,
    partitions: &[(String, i32)],
    watermarks: &BTreeMap<(String, i32), (i64, i64)>,
    config: &ClientSettings,
    timeout: Duration,
) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(partitions.len());
    match position {
        Position::Earliest => out.extend(partitions.iter().map(|tp| watermarks[tp].0)),
        Position::Latest => out.extend(partitions.iter().map(|tp| watermarks[tp].1)),
        Position::Timestamp(ms) => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in partitions {
                tpl.add_partition_offset(t, *p, Offset::Offset(*ms))
                    .map_err(|e| Error::kafka("bad timestamp", e))?;
            }
            let found = consumer
                .offsets_for_times(tpl, timeout)
                .map_err(|e| Error::kafka("cannot look up offsets for the timestamp", e))?;
            for tp in partitions {
                let off = found.find_partition(&tp.0, tp.1).map(|e| e.offset());
                out.push(match off {
                    Some(Offset::Offset(o)) => o,
                    // No message at or after the time: the partition's end.
                    _ => watermarks[tp].1,
                });
            }
        }
        Position::Committed => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in partitions {
                tpl.add_partition(t, *p);
            }
            let group = config_value(config, "group.id").unwrap_or_default();
            let committed = until_answered(consumer, config, timeout, |slice| {
                consumer.committed_offsets(tpl.clone(), slice)
            })
            .map_err(|e| {
                e.into_error("cannot fetch committed offsets")
                    .denied(format!("group '{group}'"), "describe")
            })?;
            let reset_latest = matches!(
                config_value(config, "auto.offset.reset"),
                Some("latest" | "largest" | "end")
            );
            for tp in partitions {
                out.push(match committed.find_partition(&tp.0, tp.1).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ if reset_latest => watermarks[tp].1,
                    _ => watermarks[tp].0,
                });
            }
        }
        Position::Offsets { offsets, default } => {
            let defaults = resolve_offsets(consumer, default, partitions, watermarks, config, timeout)?;
            for (tp, d) in partitions.iter().zip(defaults) {
                out.push(offsets.get(tp).copied().unwrap_or(d));
            }
            for tp in offsets.keys() {
                if !partitions.contains(tp) {
                    return Err(Error::Config(format!(
                        "an offset was given for topic '{}' partition {}, which is not read",
                        tp.0, tp.1
                    )));
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn resolve_plan<C: ConsumerContext + HasHooks>(
    consumer: &BaseConsumer<C>,
    options: &DatasetOptions,
    partitions: &[(String, i32)],
) -> Result<Vec<PartitionRange>> {
    let mut watermarks = BTreeMap::new();
    for (t, p) in partitions {
        let wm = consumer
            .fetch_watermarks(t, *p, options.timeout)
            .map_err(|e| Error::kafka(format!("cannot fetch watermarks of topic '{t}' partition {p}"), e))?;
        watermarks.insert((t.clone(), *p), wm);
    }
    let starts = resolve_offsets(
        consumer,
        &options.start,
        partitions,
        &watermarks,
        &options.config,
        options.timeout,
    )?;
    let ends = match &options.end {
        Some(Position::Committed) => return Err(Error::Config("end='committed' is not supported".into())),
        Some(end) => Some(resolve_offsets(
            consumer,
            end,
            partitions,
            &watermarks,
            &options.config,
            options.timeout,
        )?),
        None => None,
    };
    let mut plan = Vec::with_capacity(partitions.len());
    for (i, (t, p)) in partitions.iter().enumerate() {
        let (low, high) = watermarks[&(t.clone(), *p)];
        let start = starts[i];
        if start < low || start > high {
            return Err(Error::Config(format!(
                "start offset {start} of topic '{t}' partition {p} is outside its range [{low}, {high}]"
            )));
        }
        let end = ends.as_ref().map(|e| e[i].clamp(start, high));
        plan.push(PartitionRange {
            topic: t.clone(),
            partition: *p,
            start,
            end,
        });
    }
    Ok(plan)
}
