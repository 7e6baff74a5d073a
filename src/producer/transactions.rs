//! The transactional producer's steps (`transactional.id`): exactly-once inference writes its
//! results and its input offsets in one transaction.

use super::Producer;
use crate::error::{Error, Result};
use rdkafka::producer::Producer as _;
use std::time::{Duration, Instant};

impl Producer {
    /// Registers the `transactional.id` with the cluster, fencing older producers that used it.
    pub fn init_transactions(&self, timeout: Duration) -> Result<()> {
        let id = self.transactional_id.as_deref().unwrap_or_default();
        self.inner.init_transactions(timeout).map_err(|e| {
            self.check_login().err().unwrap_or_else(|| {
                Error::kafka("init_transactions", e).denied(format!("transactional id '{id}'"), "write")
            })
        })
    }

    pub fn begin_transaction(&self) -> Result<()> {
        self.inner
            .begin_transaction()
            .map_err(|e| Error::kafka("begin_transaction", e))
    }

    /// Sends what is queued and commits it, with any offsets sent to the transaction, atomically.
    pub fn commit_transaction(&self, timeout: Duration) -> Result<()> {
        // rust-rdkafka's `commit_transaction` first runs its own flush, which waits in 100 ms
        // polls that do not end when the last delivery comes in: every commit with messages
        // still in flight took at least 100 ms. Draining here first leaves it nothing to wait
        // for; delivery failures are then the transaction's (commit_transaction reports them).
        let deadline = Instant::now() + timeout;
        let _ = self.drain(deadline);
        self.inner
            .commit_transaction(deadline.saturating_duration_since(Instant::now()))
            .map_err(|e| Error::kafka("commit_transaction", e))
    }

    pub fn abort_transaction(&self, timeout: Duration) -> Result<()> {
        self.inner
            .abort_transaction(timeout)
            .map_err(|e| Error::kafka("abort_transaction", e))
    }

    /// Commits consumer offsets (next offset per partition) as part of the open transaction.
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &crate::consumer::batch::OffsetMap,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<()> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(|e| Error::kafka("bad offset", e))?;
        }
        self.inner
            .send_offsets_to_transaction(&tpl, group, timeout)
            .map_err(|e| Error::kafka("send_offsets_to_transaction", e))
    }
}
