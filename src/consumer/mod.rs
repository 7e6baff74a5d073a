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

pub mod batch;
mod batch_consume;
mod queue;

use self::batch::{BatchBuilder, KafkaBatch, MessageView, MetaColumn, OffsetMap, PartitionIds};
use self::batch_consume::{BatchQueue, RawMessage};
use self::queue::{ByteBoundedQueue, Popped, PushError};
use crate::client::{
    await_cluster, client_config, config_value, until_answered, ClientHooks, ClientSettings, HasHooks,
    TokenRefresher,
};
use crate::error::{Error, MessagePosition, Result};
use crate::format::FormatSpec;
use crate::producer::{OutgoingMessage, Producer};
use arrow_schema::SchemaRef;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use rdkafka_sys::bindings as rd;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        let partitions = resolve_partitions(&consumer, &options.source, options.timeout)?;
        let plan = if subscribe {
            None
        } else {
            Some(resolve_plan(&consumer, &options, &partitions)?)
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

/// Consumer context without rebalance handling (planning and assign mode).
#[derive(Default)]
pub(crate) struct PlainContext {
    hooks: ClientHooks,
}
crate::client_context_with_hooks!(PlainContext);
impl ConsumerContext for PlainContext {}

pub(crate) fn new_consumer<C: ConsumerContext + 'static>(
    config: &ClientSettings,
    ctx: C,
) -> Result<ClosingConsumer<C>> {
    let mut cc = client_config(config);
    // Offsets are committed by the reader, only for what the user received.
    cc.set("enable.auto.commit", "false");
    cc.set("enable.auto.offset.store", "false");
    cc.set("enable.partition.eof", "true");
    if config_value(config, "fetch.queue.backoff.ms").is_none() {
        // librdkafka pauses fetching for this long whenever its prefetch queue is above
        // `queued.min.messages`; its 1 s default stalls a consumer that drains the queue faster
        // than that, which a batch decoder does.
        cc.set("fetch.queue.backoff.ms", "10");
    }
    if config_value(config, "auto.offset.reset").is_none() {
        // A training set starts at the beginning unless the user says otherwise.
        cc.set("auto.offset.reset", "earliest");
    }
    if config_value(config, "group.id").is_none() {
        // librdkafka needs a group handle even for explicit assignment. Without a user group
        // nothing is ever committed, so a private name that no one else uses is enough.
        static ANONYMOUS: AtomicU64 = AtomicU64::new(0);
        let n = ANONYMOUS.fetch_add(1, Ordering::Relaxed);
        cc.set(
            "group.id",
            format!("kafka-ml-anonymous-{}-{n}", std::process::id()),
        );
    }
    let consumer: Arc<BaseConsumer<C>> = Arc::new(
        cc.create_with_context(ctx)
            .map_err(|e| Error::kafka("invalid consumer configuration", e))?,
    );
    let token_refresher = TokenRefresher::when_needed(&consumer, consumer.client().native_ptr(), config)?;
    Ok(ClosingConsumer {
        _token_refresher: token_refresher,
        consumer,
    })
}

/// A consumer that closes promptly when dropped.
///
/// rust-rdkafka's `BaseConsumer` drop closes a group consumer by polling in steps of 100 ms until
/// librdkafka reports it closed, and the close seldom posts an event that ends a step early: each
/// drop took 50-150 ms, paid by every `KafkaDataset` when it opens (the planning consumer) and
/// closes. Polling in short steps here returns as soon as the close is done; the inner drop then
/// finds the consumer closed.
pub(crate) struct ClosingConsumer<C: ConsumerContext> {
    /// Serves OAUTHBEARER token refreshes from the application while the consumer lives.
    _token_refresher: Option<TokenRefresher>,
    consumer: Arc<BaseConsumer<C>>,
}

/// How long a drop waits for librdkafka to close a consumer (leave its group) before giving up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl<C: ConsumerContext> std::ops::Deref for ClosingConsumer<C> {
    type Target = BaseConsumer<C>;

    fn deref(&self) -> &BaseConsumer<C> {
        &self.consumer
    }
}

impl<C: ConsumerContext> Drop for ClosingConsumer<C> {
    fn drop(&mut self) {
        if self.consumer.close_queue().is_err() {
            return; // the inner drop tries again in its own way
        }
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !self.consumer.closed() && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(1));
        }
    }
}

fn resolve_partitions<C: ConsumerContext>(
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

fn resolve_plan<C: ConsumerContext + HasHooks>(
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

/// What the consumer thread hands to the reader.
enum Item {
    Batch(KafkaBatch),
    Error(Error),
}

/// State shared by the reader, the consumer thread and the rebalance callback.
struct Shared {
    queue: ByteBoundedQueue<Item>,
    stop: AtomicBool,
    /// Next offset after everything handed to the user, per partition.
    delivered: Mutex<OffsetMap>,
    /// Partitions this reader may commit (all of them in assign mode; the current assignment in
    /// subscribe mode).
    owned: Mutex<BTreeSet<(String, i32)>>,
    /// What has been committed already, to skip redundant commits.
    committed: Mutex<OffsetMap>,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    tombstones: AtomicU64,
    /// Whether this reader commits what it hands out to the group.
    commits: bool,
    /// Set while the consumer thread waits for room in a full queue with a group's partitions
    /// paused (so partitions assigned meanwhile are paused too).
    paused: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The delivered offsets of owned partitions that are not committed yet.
    fn uncommitted(&self, only: Option<&BTreeSet<(String, i32)>>) -> TopicPartitionList {
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

    fn commit<C: ConsumerContext>(
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
struct GroupContext {
    shared: Arc<Shared>,
    hooks: ClientHooks,
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
    fn start(
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
            ErrorPolicy::DeadLetter { topic } => {
                // The dead-letter producer shares the connection settings, not consumer ones.
                let producer_config = options.config.with_properties(
                    options
                        .config
                        .iter()
                        .filter(|(k, _)| is_common_property(k))
                        .cloned()
                        .collect(),
                );
                Some((Producer::new(&producer_config)?, topic.clone()))
            }
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

/// librdkafka properties that make sense for a producer too (connection and security).
fn is_common_property(key: &str) -> bool {
    key == "bootstrap.servers"
        || key == "metadata.broker.list"
        || key == "client.id"
        || key.starts_with("security.")
        || key.starts_with("ssl.")
        || key.starts_with("sasl.")
        || key.starts_with("socket.")
        || key.starts_with("broker.")
        || key == "debug"
}

/// The consumer thread.
struct Engine {
    shared: Arc<Shared>,
    /// Batch reads of the consumer queue, for assigned readers that never commit (declared
    /// before `consumer` so it is released first).
    batch_queue: Option<BatchQueue>,
    consumer: Arc<ClosingConsumer<GroupContext>>,
    builder: BatchBuilder,
    batch_size: usize,
    max_wait: Duration,
    /// The last look at the consumer's queue found it empty.
    drained: bool,
    policy: ErrorPolicy,
    dead_letter: Option<(Producer, String)>,
    ids: PartitionIds,
    /// Exclusive end offset per partition id while it is still being read (bounded reads);
    /// `None` once finished.
    ends: Vec<Option<i64>>,
    /// Partitions of a bounded read not yet finished.
    remaining: usize,
    bounded: bool,
    /// Partitions come from the group (subscribe mode).
    subscribed: bool,
    /// The user's consumer group, if any (named in authorization errors).
    group: Option<String>,
    timeout: Duration,
}

/// Why the poll loop stopped.
enum Stop {
    /// The reader closed, or the queue did.
    Closed,
    Failed(Error),
}

/// Messages taken per call of librdkafka's batch consume API.
const BATCH_CONSUME: usize = 1024;

/// How many messages are handled between two looks at the clock while messages keep coming.
const CLOCK_EVERY: u32 = 64;

impl Engine {
    fn run(mut self) {
        match self.poll_loop() {
            Ok(()) => {
                let _ = self.emit();
            }
            Err(Stop::Failed(e)) => {
                // Hand out what was decoded before the failure, then the failure.
                if self.emit().is_ok() {
                    let _ = self.push(Item::Error(e));
                }
            }
            Err(Stop::Closed) => {}
        }
        self.shared.queue.close();
    }

    fn poll_loop(&mut self) -> Result<(), Stop> {
        // When the open batch must be handed out even if not full (the latency bound).
        let mut deadline: Option<Instant> = None;
        let mut since_clock = 0u32;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Err(Stop::Closed);
            }
            if self.bounded && self.remaining == 0 {
                return Ok(());
            }
            let progressed = if self.batch_queue.is_some() {
                since_clock = CLOCK_EVERY; // one clock read per batch call is cheap
                self.poll_batch(deadline)?
            } else {
                self.poll_one(deadline, &mut since_clock)?
            };
            if self.latency_first() {
                // No deadline: the batch closes when full or when nothing more is waiting.
                if self.builder.rows() >= self.batch_size || (self.drained && self.builder.has_progress()) {
                    self.emit()?;
                }
                continue;
            }
            if progressed && deadline.is_none() {
                deadline = Some(Instant::now() + self.max_wait);
            }
            since_clock += 1;
            let due = since_clock >= CLOCK_EVERY && {
                since_clock = 0;
                deadline.is_some_and(|d| Instant::now() >= d)
            };
            if self.builder.rows() >= self.batch_size || (due && self.builder.has_progress()) {
                self.emit()?;
                deadline = None;
            }
        }
    }

    /// `max_wait == 0`: a batch is handed out as soon as no more input is waiting in the
    /// consumer's queue (or when full), so a lone message is not held back for company, while
    /// under load the queue is rarely empty and batches grow towards `batch_size`.
    fn latency_first(&self) -> bool {
        self.max_wait.is_zero()
    }

    /// How long an empty queue may be waited on without missing the batch deadline.
    fn idle_wait(deadline: Option<Instant>) -> Duration {
        const IDLE_POLL: Duration = Duration::from_millis(100);
        deadline.map_or(IDLE_POLL, |d| {
            d.saturating_duration_since(Instant::now()).min(IDLE_POLL)
        })
    }

    /// One message through rust-rdkafka's `poll` (group consumers: serves rebalances and
    /// commit replies). Returns whether the builder gained progress.
    fn poll_one(&mut self, deadline: Option<Instant>, since_clock: &mut u32) -> Result<bool, Stop> {
        // Messages usually wait in librdkafka's queue: take them without a timeout (and
        // without reading the clock); only an empty queue waits.
        let consumer = self.consumer.clone();
        let mut polled = consumer.poll(Duration::ZERO);
        self.drained = polled.is_none();
        if polled.is_none() {
            if self.latency_first() && self.builder.has_progress() {
                return Ok(false); // hand the batch out now rather than wait for more
            }
            polled = consumer.poll(Self::idle_wait(deadline));
            *since_clock = CLOCK_EVERY;
            // What arrived may have company (a whole fetch lands at once): look again first.
            self.drained = false;
        }
        match polled {
            None => Ok(false),
            Some(Ok(msg)) => self.handle(&msg),
            Some(Err(KafkaError::PartitionEOF(_))) => {
                self.check_positions();
                Ok(false)
            }
            Some(Err(e)) => self.handle_error(e, None).map(|()| false),
        }
    }

    /// Up to `BATCH_CONSUME` messages through librdkafka's batch API. A batch closes exactly at
    /// `batch_size` rows even in the middle of what one call returned.
    fn poll_batch(&mut self, deadline: Option<Instant>) -> Result<bool, Stop> {
        // Taken out while its messages (which borrow it) are handled by `&mut self` methods.
        let mut queue = self.batch_queue.take().expect("batch path has a queue");
        let progressed = self.consume_batch(&mut queue, deadline);
        self.batch_queue = Some(queue);
        progressed
    }

    fn consume_batch(&mut self, queue: &mut BatchQueue, deadline: Option<Instant>) -> Result<bool, Stop> {
        let mut messages = queue
            .fill(Duration::ZERO)
            .map_err(|e| Stop::Failed(Error::kafka("consume", e)))?;
        self.drained = messages.is_empty();
        if messages.is_empty() {
            if self.latency_first() && self.builder.has_progress() {
                return Ok(false); // hand the batch out now rather than wait for more
            }
            drop(messages);
            messages = queue
                .fill(Self::idle_wait(deadline))
                .map_err(|e| Stop::Failed(Error::kafka("consume", e)))?;
            self.drained = false;
        }
        // Decoding is most of the work: the decoder may split it over two threads up front.
        let decodes_ahead = self.builder.decodes_ahead();
        if decodes_ahead {
            let payloads: Vec<Option<&[u8]>> = messages
                .iter()
                .filter(|m| m.error().is_none())
                .map(|m| m.payload())
                .collect();
            self.builder.prepare(&payloads);
        }
        let mut progressed = false;
        for msg in &messages {
            match msg.error() {
                None => progressed |= self.handle(msg)?,
                // Not `check_positions`: librdkafka has already moved every partition's
                // position past the whole batch, so a partition whose last messages follow this
                // EOF in the batch would look finished before they are decoded.
                Some(RDKafkaErrorCode::PartitionEOF) => {
                    self.finish_at_eof(msg.topic(), msg.partition(), msg.offset())
                }
                Some(code) => self.handle_error(
                    KafkaError::MessageConsumption(code),
                    Some((msg.topic(), msg.partition())),
                )?,
            }
            if self.builder.rows() >= self.batch_size {
                self.emit()?;
            }
        }
        if decodes_ahead {
            self.builder.prepare(&[]);
        }
        Ok(progressed)
    }

    /// Decodes one message. Returns whether the builder gained progress.
    fn handle(&mut self, msg: &impl IncomingMessage) -> Result<bool, Stop> {
        let id = self.ids.id(msg.topic(), msg.partition());
        let offset = msg.offset();
        if self.bounded {
            match self.ends.get(id).copied().flatten() {
                Some(end) if offset < end => {}
                // Past the snapshot end (fetched in the same batch) or a finished partition.
                _ => {
                    self.finish_partition(id);
                    return Ok(false);
                }
            }
        }
        let view = MessageView {
            topic: msg.topic(),
            partition: msg.partition(),
            offset,
            timestamp: msg.timestamp_ms(),
            key: msg.key(),
            value: msg.payload(),
            headers: if self.builder.wants_headers() {
                msg.header_list()
            } else {
                Vec::new()
            },
        };
        if let Err(reason) = self.builder.append(&view, id) {
            if let Some(e) = self.builder.take_unavailable() {
                // Not the message's fault: stop before its offset, skipping nothing.
                return Err(Stop::Failed(e));
            }
            let position = MessagePosition {
                topic: view.topic.to_string(),
                partition: view.partition,
                offset,
            };
            match &self.policy {
                ErrorPolicy::Raise => return Err(Stop::Failed(Error::Decode { position, reason })),
                ErrorPolicy::Skip => self.builder.advance_past(id, offset, false),
                ErrorPolicy::DeadLetter { .. } => {
                    let view = MessageView {
                        headers: msg.header_list(),
                        ..view
                    };
                    self.dead_letter(&view, &position, &reason)
                        .map_err(Stop::Failed)?;
                    self.builder.advance_past(id, offset, true);
                }
            }
        }
        if self.bounded
            && self
                .ends
                .get(id)
                .copied()
                .flatten()
                .is_some_and(|end| offset + 1 >= end)
        {
            self.finish_partition(id);
        }
        Ok(true)
    }

    fn dead_letter(&self, m: &MessageView<'_>, position: &MessagePosition, reason: &str) -> Result<()> {
        let (producer, topic) = self
            .dead_letter
            .as_ref()
            .expect("dead-letter policy has a producer");
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let mut headers = m.headers.clone();
        headers.push(("kafka_ml.error", Some(reason.as_bytes())));
        headers.push(("kafka_ml.source.topic", Some(position.topic.as_bytes())));
        headers.push(("kafka_ml.source.partition", Some(partition.as_bytes())));
        headers.push(("kafka_ml.source.offset", Some(offset.as_bytes())));
        producer.send_one(
            &OutgoingMessage {
                topic,
                key: m.key,
                value: m.value,
                partition: None,
                timestamp: m.timestamp,
                headers,
            },
            self.timeout,
        )?;
        Ok(())
    }

    fn finish_partition(&mut self, id: usize) {
        if let Some(slot) = self.ends.get_mut(id) {
            if slot.take().is_some() {
                self.remaining -= 1;
                let (topic, partition) = self.ids.name(id);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, *partition);
                // Stop fetching it; the remaining partitions keep the bandwidth.
                let _ = self.consumer.pause(&tpl);
            }
        }
    }

    /// At an EOF of one partition (batch path): the partition's messages before it have all
    /// been handled, and `eof_offset` (its fetch position) has passed any transaction markers
    /// or compacted-away offsets, so an end at or below it is reached.
    fn finish_at_eof(&mut self, topic: &str, partition: i32, eof_offset: i64) {
        if !self.bounded {
            return;
        }
        let id = self.ids.id(topic, partition);
        if self
            .ends
            .get(id)
            .copied()
            .flatten()
            .is_some_and(|end| eof_offset >= end)
        {
            self.finish_partition(id);
        }
    }

    /// At a partition EOF (poll path): finish every partition whose position reached its end
    /// (covers ends that fall on transaction markers or compacted-away offsets, which yield no
    /// message). `poll` hands out one message at a time, so a position is never ahead of what
    /// was handled; and its EOF event names the partition but not the topic.
    fn check_positions(&mut self) {
        if !self.bounded {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let id = self.ids.id(e.topic(), e.partition());
            if let (Offset::Offset(pos), Some(Some(end))) = (e.offset(), self.ends.get(id)) {
                if pos >= *end {
                    self.finish_partition(id);
                }
            }
        }
    }

    /// A consumer error, with the partition it concerns where known.
    fn handle_error(&mut self, e: KafkaError, partition: Option<(&str, i32)>) -> Result<(), Stop> {
        let code = e.rdkafka_error_code();
        let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_))
            || matches!(
                code,
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownPartition
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                        | RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::OffsetOutOfRange
                )
            );
        if fatal {
            let context = match partition {
                Some((topic, p)) => format!("cannot read topic '{topic}' partition {p}"),
                None => "consumer error".to_owned(),
            };
            let err = Error::kafka(context, e);
            let err = match (code, partition, &self.group) {
                (Some(RDKafkaErrorCode::TopicAuthorizationFailed), Some((topic, _)), _) => {
                    err.denied(format!("topic '{topic}'"), "read")
                }
                (Some(RDKafkaErrorCode::GroupAuthorizationFailed), _, Some(group)) => {
                    err.denied(format!("group '{group}'"), "read")
                }
                _ => err,
            };
            return Err(Stop::Failed(err));
        }
        // Transient (broker restart, network blip): librdkafka reconnects by itself.
        log::warn!("transient consumer error: {e}");
        Ok(())
    }

    /// Closes the current batch and queues it. Dead-lettered messages are acknowledged first,
    /// so no offset past them is handed out (or committed) before they are safe.
    fn emit(&mut self) -> Result<(), Stop> {
        if !self.builder.has_progress() {
            return Ok(());
        }
        if let Some((producer, _)) = &self.dead_letter {
            producer.flush(self.timeout).map_err(Stop::Failed)?;
        }
        let batch = self.builder.finish(&self.ids);
        self.push(Item::Batch(batch))
    }

    fn push(&self, item: Item) -> Result<(), Stop> {
        let bytes = match &item {
            Item::Batch(b) => b.record_batch.get_array_memory_size(),
            Item::Error(_) => 0,
        };
        // A group member that stops polling for `max.poll.interval.ms` is evicted, and its
        // partitions are re-read from the last commit by whoever takes them. While a subscribed
        // reader waits for room, it pauses its partitions and keeps polling instead.
        let keep_polling = self.subscribed;
        let mut item = item;
        loop {
            let wait = if keep_polling {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            match self.shared.queue.push(item, bytes, wait) {
                Ok(()) => {
                    self.resume_if_paused();
                    return Ok(());
                }
                Err(PushError::Closed) => return Err(Stop::Closed),
                Err(PushError::Full(back)) => {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return Err(Stop::Closed);
                    }
                    item = back;
                    if keep_polling {
                        self.poll_while_paused();
                    }
                }
            }
        }
    }

    /// One poll with every assigned partition paused: serves the group (heartbeat deadline,
    /// rebalances, commit replies) without taking data.
    fn poll_while_paused(&self) {
        if !self.shared.paused.swap(true, Ordering::SeqCst) {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.pause(&assignment);
            }
        }
        match self.consumer.poll(Duration::from_millis(100)) {
            // Fetched before the pause took effect: rewind so it is read again after resume.
            Some(Ok(msg)) => {
                let (topic, partition, offset) = (
                    Message::topic(&msg),
                    Message::partition(&msg),
                    Message::offset(&msg),
                );
                let _ = self
                    .consumer
                    .seek(topic, partition, Offset::Offset(offset), self.timeout);
            }
            Some(Err(e)) => log::warn!("consumer error while the reader's queue is full: {e}"),
            None => {}
        }
    }

    fn resume_if_paused(&self) {
        if self.shared.paused.swap(false, Ordering::SeqCst) {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.resume(&assignment);
            }
        }
    }
}

/// What the engine reads of a message, from either consume path.
trait IncomingMessage {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn timestamp_ms(&self) -> Option<i64>;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    fn header_list(&self) -> Vec<(&str, Option<&[u8]>)>;
}

impl IncomingMessage for rdkafka::message::BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Message::timestamp(self).to_millis()
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }
    fn header_list(&self) -> Vec<(&str, Option<&[u8]>)> {
        Message::headers(self)
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default()
    }
}

impl IncomingMessage for RawMessage<'_> {
    fn topic(&self) -> &str {
        RawMessage::topic(self)
    }
    fn partition(&self) -> i32 {
        RawMessage::partition(self)
    }
    fn offset(&self) -> i64 {
        RawMessage::offset(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        RawMessage::timestamp(self)
    }
    fn key(&self) -> Option<&[u8]> {
        RawMessage::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        RawMessage::payload(self)
    }
    fn header_list(&self) -> Vec<(&str, Option<&[u8]>)> {
        RawMessage::headers(self)
    }
}
