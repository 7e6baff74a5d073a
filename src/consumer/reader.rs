//! One pass over the data, as the user sees it: batches off the queue, the offsets delivered so
//! far, commits of exactly those, and a close that stops the consumer thread.

use super::base::{new_consumer, ClosingConsumer};
use super::batch::{BatchBuilder, KafkaBatch, OffsetMap, PartitionIds};
use super::batch_consume::BatchQueue;
use super::dead_letter::DeadLetters;
use super::engine::{Engine, BATCH_CONSUME};
use super::options::{DatasetOptions, ErrorPolicy, PartitionRange, Source};
use super::queue::{ByteBoundedQueue, Popped};
use super::shared::{lock, GroupContext, Item, Shared};
use crate::client::{config_value, ClientHooks};
use crate::error::{Error, Result};
use arrow_schema::SchemaRef;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rdkafka_sys::bindings as rd;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Counters of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderStats {
    pub skipped: u64,
    pub dead_lettered: u64,
    /// Tombstones of a format that reads them as "no row" (`debezium`).
    pub tombstones: u64,
    pub queued_bytes: usize,
}

/// One pass over the data; see the module docs.
pub struct Reader {
    shared: Arc<Shared>,
    /// Dropped on close: destroying the consumer leaves the group and stops librdkafka's threads.
    consumer: Option<Arc<ClosingConsumer<GroupContext>>>,
    thread: Option<JoinHandle<()>>,
    schema: SchemaRef,
    finished: bool,
}

/// Something taken off the reader's queue, to be passed to `Reader::accept`.
pub struct Arrival(Popped<Item>);

/// Waits asynchronously for the reader's next arrival.
pub struct Waiter(Arc<Shared>);

impl Waiter {
    pub async fn wait(&self) -> Arrival {
        Arrival(self.0.queue.pop_async().await)
    }
}

/// What `Reader::next` found.
pub enum Next {
    Batch(KafkaBatch),
    /// Nothing yet; call again (the caller checks for Ctrl-C in between).
    Pending,
    End,
}

impl Reader {
    pub(super) fn start(
        options: &DatasetOptions,
        plan: Option<Vec<PartitionRange>>,
        resume: Option<&OffsetMap>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let commits = options.commit && config_value(&options.config, "group.id").is_some();
        let shared = Arc::new(Shared {
            queue: ByteBoundedQueue::new(options.queue_bytes),
            stop: AtomicBool::new(false),
            delivered: Mutex::new(OffsetMap::new()),
            owned: Mutex::new(BTreeSet::new()),
            committed: Mutex::new(OffsetMap::new()),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            tombstones: AtomicU64::new(0),
            commits,
            paused: AtomicBool::new(false),
        });
        let consumer = Arc::new(new_consumer(
            &options.config,
            GroupContext {
                shared: shared.clone(),
                hooks: ClientHooks::default(),
            },
        )?);
        let mut ids = PartitionIds::default();
        let mut ends: Vec<Option<i64>> = Vec::new();
        match &plan {
            Some(plan) => {
                let mut tpl = TopicPartitionList::new();
                let mut owned = lock(&shared.owned);
                let mut delivered = lock(&shared.delivered);
                for r in plan {
                    let tp = (r.topic.clone(), r.partition);
                    let start = resume.and_then(|m| m.get(&tp).copied()).unwrap_or(r.start);
                    if let Some(end) = r.end {
                        if start > end {
                            return Err(Error::Config(format!(
                                "resume offset {start} of topic '{}' partition {} is past the end {end}",
                                r.topic, r.partition
                            )));
                        }
                    }
                    owned.insert(tp.clone());
                    delivered.insert(tp.clone(), start);
                    if r.end.is_some_and(|e| start >= e) {
                        continue; // nothing to read here
                    }
                    if let Some(end) = r.end {
                        let id = ids.id(&tp.0, tp.1);
                        ends.resize(id + 1, None);
                        ends[id] = Some(end);
                    }
                    tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(start))
                        .map_err(|e| Error::kafka("bad start offset", e))?;
                }
                // The committed map starts as what is already committed-or-resumed: do not
                // recommit start offsets the user did not move.
                *lock(&shared.committed) = delivered.clone();
                consumer
                    .assign(&tpl)
                    .map_err(|e| Error::kafka("cannot assign partitions", e))?;
            }
            None => {
                let Source::Topics(topics) = &options.source else {
                    unreachable!("subscribe mode reads topics")
                };
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&names)
                    .map_err(|e| Error::kafka("cannot subscribe", e))?;
            }
        }
        let bounded = plan.is_some() && options.end.is_some();
        let dead_letter = match &options.on_error {
            ErrorPolicy::DeadLetter { topic } => Some(DeadLetters::new(&options.config, topic)?),
            _ => None,
        };
        // SAFETY: in assign mode without commits the consumer never subscribes (it was
        // assigned above) and never commits (`commits` is false), so its queue never holds a
        // rebalance or a commit reply the batch call could not serve.
        let batch_queue =
            (plan.is_some() && !commits).then(|| unsafe { BatchQueue::new(consumer.clone(), BATCH_CONSUME) });
        let engine = Engine {
            shared: shared.clone(),
            batch_queue,
            consumer: consumer.clone(),
            builder: BatchBuilder::new(options.format.decoder()?, &options.metadata)?,
            batch_size: options.batch_size,
            max_wait: options.max_wait,
            drained: false,
            policy: options.on_error.clone(),
            dead_letter,
            remaining: ends.iter().flatten().count(),
            ids,
            ends,
            bounded,
            subscribed: plan.is_none(),
            group: config_value(&options.config, "group.id").map(str::to_owned),
            timeout: options.timeout,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-ml-consumer".into())
            .spawn(move || engine.run())
            .map_err(|e| Error::Config(format!("cannot start the consumer thread: {e}")))?;
        Ok(Reader {
            shared,
            consumer: Some(consumer),
            thread: Some(thread),
            schema,
            finished: false,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Waits up to `wait` for the next batch. Commits (with a group) what was handed out before.
    pub fn next(&mut self, wait: Duration) -> Result<Next> {
        if self.finished {
            return Ok(Next::End);
        }
        self.commit_delivered(CommitMode::Async)?;
        let arrival = Arrival(self.shared.queue.pop(wait));
        self.accept(arrival)
    }

    /// For `async for`: a handle that waits for the next arrival without blocking a thread.
    /// Call `commit_pending` first, then `accept` what the waiter returns.
    pub fn waiter(&self) -> Waiter {
        Waiter(self.shared.clone())
    }

    /// Commits (asynchronously, with a group) what was handed out so far.
    pub fn commit_pending(&self) -> Result<()> {
        self.commit_delivered(CommitMode::Async)
    }

    /// Takes what a `Waiter` (or `next`) found off the queue.
    pub fn accept(&mut self, arrival: Arrival) -> Result<Next> {
        if self.finished {
            return Ok(Next::End);
        }
        match arrival.0 {
            Popped::Item(item) => self.take(item),
            Popped::Empty => Ok(Next::Pending),
            Popped::Closed => {
                self.finished = true;
                Ok(Next::End)
            }
        }
    }

    fn take(&mut self, item: Item) -> Result<Next> {
        match item {
            Item::Batch(batch) => {
                {
                    let mut delivered = lock(&self.shared.delivered);
                    for (tp, off) in &batch.next_offsets {
                        delivered.insert(tp.clone(), *off);
                    }
                }
                self.shared.skipped.fetch_add(batch.skipped, Ordering::Relaxed);
                self.shared
                    .dead_lettered
                    .fetch_add(batch.dead_lettered, Ordering::Relaxed);
                self.shared
                    .tombstones
                    .fetch_add(batch.tombstones, Ordering::Relaxed);
                if batch.record_batch.num_rows() == 0 {
                    // Only offset progress (skipped, dead-lettered or tombstone messages).
                    return Ok(Next::Pending);
                }
                Ok(Next::Batch(batch))
            }
            Item::Error(e) => {
                self.finished = true;
                Err(e)
            }
        }
    }

    fn commit_delivered(&self, mode: CommitMode) -> Result<()> {
        let Some(consumer) = self.consumer.as_ref().filter(|_| self.shared.commits) else {
            return Ok(());
        };
        let tpl = self.shared.uncommitted(None);
        self.shared.commit(consumer, tpl, mode)
    }

    /// Commits, synchronously, everything handed out so far (with a `group.id`).
    pub fn commit(&self) -> Result<()> {
        self.commit_delivered(CommitMode::Sync)
    }

    /// Commits exactly `offsets` (the positions after a batch whose results are safe, say) for
    /// the partitions this reader still owns, synchronously, whether or not the reader commits by
    /// itself: a partition revoked meanwhile belongs to another member, whose progress this must
    /// not overwrite.
    ///
    /// `CommitMode::Async` returns once the commit is queued (a failure is logged when the
    /// coordinator answers): for loops that commit after every batch and must not wait a round
    /// trip each time; a later commit covers a failed one.
    pub fn commit_offsets(&self, offsets: &OffsetMap, mode: CommitMode) -> Result<()> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Err(Error::Closed("KafkaDataset reader"));
        };
        let mut tpl = TopicPartitionList::new();
        {
            let owned = lock(&self.shared.owned);
            for (tp, off) in offsets {
                if owned.contains(tp) {
                    tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*off))
                        .map_err(|e| Error::kafka(format!("bad offset for '{}' [{}]", tp.0, tp.1), e))?;
                }
            }
        }
        self.shared.commit(consumer, tpl, mode)
    }

    /// The consumer's group membership, for sending offsets inside a producer transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.as_ref().and_then(|c| c.group_metadata())
    }

    /// The partitions this reader owns now (the group's current assignment in subscribe mode).
    pub fn assignment(&self) -> Vec<(String, i32)> {
        lock(&self.shared.owned).iter().cloned().collect()
    }

    /// The next offset to read in every partition: exactly after what the user received.
    pub fn positions(&self) -> OffsetMap {
        lock(&self.shared.delivered).clone()
    }

    /// Messages in each owned partition after what the user received, by the high watermark
    /// the last fetch brought (no request is made); partitions not fetched yet are left out.
    pub fn lag(&self) -> OffsetMap {
        let Some(consumer) = self.consumer.as_ref() else {
            return OffsetMap::new();
        };
        let delivered = lock(&self.shared.delivered).clone();
        let owned = lock(&self.shared.owned).clone();
        let mut lag = OffsetMap::new();
        for (tp, position) in delivered.into_iter().filter(|(tp, _)| owned.contains(tp)) {
            let Ok(topic) = CString::new(tp.0.as_str()) else {
                continue;
            };
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: the consumer's handle is valid while `consumer` lives; the topic is a
            // NUL-terminated string that outlives the call, and both out-pointers are valid
            // i64s. The call only reads librdkafka's cached watermarks (no request).
            let code = unsafe {
                rd::rd_kafka_get_watermark_offsets(
                    consumer.client().native_ptr(),
                    topic.as_ptr(),
                    tp.1,
                    &mut low,
                    &mut high,
                )
            };
            if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
                lag.insert(tp, (high - position).max(0));
            }
        }
        lag
    }

    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            skipped: self.shared.skipped.load(Ordering::Relaxed),
            dead_lettered: self.shared.dead_lettered.load(Ordering::Relaxed),
            tombstones: self.shared.tombstones.load(Ordering::Relaxed),
            queued_bytes: self.shared.queue.queued_bytes(),
        }
    }

    /// Stops the consumer thread and commits what the user received. Idempotent.
    pub fn close(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.queue.close();
        self.shared.queue.clear();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.finished = true;
        let result = self.commit_delivered(CommitMode::Sync);
        // The engine thread has exited, so this is the last handle: dropping it closes the
        // consumer (leaving the group at once, so a rebalance need not wait for a timeout).
        self.consumer = None;
        result
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!("closing the reader: {e}");
        }
    }
}
