//! Commit state and rebalances: what the reader, the consumer thread and the rebalance callback
//! share (the queue, what was delivered, owned and committed, the counters), and the group
//! context that commits what the user received before partitions are revoked.

use super::batch::{KafkaBatch, OffsetMap};
use super::queue::ByteBoundedQueue;
use crate::client::ClientHooks;
use crate::error::{Error, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the consumer thread hands to the reader.
pub(super) enum Item {
    Batch(KafkaBatch),
    Error(Error),
}

/// State shared by the reader, the consumer thread and the rebalance callback.
pub(super) struct Shared {
    pub(super) queue: ByteBoundedQueue<Item>,
    pub(super) stop: AtomicBool,
    /// Next offset after everything handed to the user, per partition.
    pub(super) delivered: Mutex<OffsetMap>,
    /// Partitions this reader may commit (all of them in assign mode; the current assignment in
    /// subscribe mode).
    pub(super) owned: Mutex<BTreeSet<(String, i32)>>,
    /// What has been committed already, to skip redundant commits.
    pub(super) committed: Mutex<OffsetMap>,
    pub(super) skipped: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) tombstones: AtomicU64,
    /// Whether this reader commits what it hands out to the group.
    pub(super) commits: bool,
    /// Set while the consumer thread waits for room in a full queue with a group's partitions
    /// paused (so partitions assigned meanwhile are paused too).
    pub(super) paused: AtomicBool,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The delivered offsets of owned partitions that are not committed yet.
    pub(super) fn uncommitted(&self, only: Option<&BTreeSet<(String, i32)>>) -> TopicPartitionList {
        let delivered = lock(&self.delivered);
        let owned = lock(&self.owned);
        let committed = lock(&self.committed);
        let mut tpl = TopicPartitionList::new();
        for (tp, off) in delivered.iter() {
            if owned.contains(tp) && only.is_none_or(|o| o.contains(tp)) && committed.get(tp) != Some(off) {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*off));
            }
        }
        tpl
    }

    pub(super) fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: TopicPartitionList,
        mode: CommitMode,
    ) -> Result<()> {
        if tpl.count() == 0 {
            return Ok(());
        }
        consumer
            .commit(&tpl, mode)
            .map_err(|e| Error::kafka("cannot commit offsets", e))?;
        let mut committed = lock(&self.committed);
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                committed.insert((e.topic().to_string(), e.partition()), o);
            }
        }
        Ok(())
    }
}

/// Subscribe-mode context: commits what the user received before partitions are revoked.
pub(super) struct GroupContext {
    pub(super) shared: Arc<Shared>,
    pub(super) hooks: ClientHooks,
}

crate::client_context_with_hooks!(GroupContext);

impl ConsumerContext for GroupContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        // Synchronous commits return their error to the caller; this reports asynchronous ones.
        if let Err(e) = result {
            let parts: Vec<String> = offsets
                .elements()
                .iter()
                .map(|e| format!("'{}' [{}] at {:?}", e.topic(), e.partition(), e.offset()))
                .collect();
            log::warn!("commit of {} failed: {e}", parts.join(", "));
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: BTreeSet<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            // Without commits (offsets go through producer transactions) nothing is committed here.
            let pending = if self.shared.commits {
                self.shared.uncommitted(Some(&revoked))
            } else {
                TopicPartitionList::new()
            };
            if let Err(e) = self.shared.commit(consumer, pending, CommitMode::Sync) {
                log::warn!("commit before rebalance failed: {e}");
            }
            let mut owned = lock(&self.shared.owned);
            for tp in &revoked {
                owned.remove(tp);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut owned = lock(&self.shared.owned);
            for e in tpl.elements() {
                owned.insert((e.topic().to_string(), e.partition()));
            }
            if self.shared.paused.load(Ordering::SeqCst) {
                // The reader's queue is full: new partitions wait like the others.
                let _ = consumer.pause(tpl);
            }
        }
    }
}
