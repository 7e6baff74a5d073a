//! A librdkafka producer with delivery accounting: every message is counted as delivered or
//! failed by librdkafka's delivery reports, and `flush` tells which failed and why.
//! Used for dead-letter topics, the embedded demo and the Python `Producer`.

use crate::client::{client_config, config_value, explain, ClientHooks, ClientSettings, TokenRefresher};
use crate::error::{resource_kind, Error, KafkaCode, Result};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::util::IntoOpaque;
use rdkafka_sys::bindings as rd;
use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counts delivery reports; remembers the first failure.
#[derive(Default)]
pub struct DeliveryTracker {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Failures not yet reported by a `flush`: each failure is raised once.
    unreported: AtomicU64,
    first_failure: Mutex<Option<(String, KafkaError)>>,
    hooks: ClientHooks,
}

crate::client_context_with_hooks!(DeliveryTracker);

/// Which send a message belongs to, and its row there.
pub type MessageTag = Box<(Arc<SendTracker>, usize)>;

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = MessageTag;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: MessageTag) {
        let (send, row) = *tag;
        send.report(row, result.as_ref().err().map(|(e, _)| e));
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.unreported.fetch_add(1, Ordering::Relaxed);
                use rdkafka::Message;
                let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some((
                        format!("topic '{}' partition {}", msg.topic(), msg.partition()),
                        err.clone(),
                    ));
                }
            }
        }
    }
}

/// Failed rows kept per send with their reasons (the count is exact beyond that).
const FAILURES_KEPT: usize = 100;

/// The delivery outcome of one `send` (or `produce`): counts as reports arrive, the failed rows
/// with reasons, and completion, waited on blocking or asynchronously.
pub struct SendTracker {
    rows: usize,
    pending: AtomicUsize,
    delivered: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<(usize, String)>>,
    finished: Condvar,
    finished_lock: Mutex<()>,
    finished_async: tokio::sync::Notify,
}

impl SendTracker {
    pub fn new(rows: usize) -> Arc<Self> {
        Arc::new(SendTracker {
            rows,
            pending: AtomicUsize::new(rows),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            finished: Condvar::new(),
            finished_lock: Mutex::new(()),
            finished_async: tokio::sync::Notify::new(),
        })
    }

    fn report(&self, row: usize, error: Option<&KafkaError>) {
        match error {
            None => self.delivered.fetch_add(1, Ordering::Relaxed),
            Some(e) => {
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                if failures.len() < FAILURES_KEPT {
                    failures.push((row, e.to_string()));
                }
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        self.settle(1);
    }

    /// `count` messages will get no report (they were never queued).
    fn settle(&self, count: usize) {
        if self.pending.fetch_sub(count, Ordering::AcqRel) == count {
            let _guard = self.finished_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.finished.notify_all();
            self.finished_async.notify_waiters();
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn is_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// The first failed rows (up to 100) with librdkafka's reason.
    pub fn failures(&self) -> Vec<(usize, String)> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to `timeout` for every report; true when all arrived.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.finished_lock.lock().unwrap_or_else(|p| p.into_inner());
        while !self.is_done() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = self
                .finished
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Waits for every report without blocking a thread.
    pub async fn finished(&self) {
        loop {
            let notified = self.finished_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }

    /// An error describing the failed rows, if any.
    pub fn outcome(&self) -> Result<()> {
        let failed = self.failed();
        if failed == 0 {
            return Ok(());
        }
        let failures = self.failures();
        let listed: Vec<String> = failures
            .iter()
            .take(5)
            .map(|(row, why)| format!("row {row}: {why}"))
            .collect();
        Err(Error::Delivery {
            what: format!("{failed} of {} rows failed ({})", self.rows, listed.join("; ")),
            kafka: None,
        })
    }
}

/// One message to send.
pub struct OutgoingMessage<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

pub struct Producer {
    /// librdkafka topic handles for batched sends. Declared before `inner` so they are
    /// destroyed before the client they belong to.
    topic_handles: Mutex<HashMap<String, TopicHandle>>,
    /// A background thread serves delivery reports, so they are counted (and transactions can
    /// flush or abort) whatever the caller does.
    inner: Arc<ThreadedProducer<DeliveryTracker>>,
    /// Serves OAUTHBEARER token refreshes from the application while the producer lives.
    _token_refresher: Option<TokenRefresher>,
    /// `transactional.id`, named in authorization errors.
    transactional_id: Option<String>,
    /// The connection settings, to explain a failed certificate check.
    settings: ClientSettings,
    /// Messages handed to librdkafka so far.
    sent: AtomicU64,
    /// librdkafka's `message.max.bytes`: larger rows are refused before anything is sent.
    max_message_bytes: usize,
    /// Topics whose existence was checked already.
    known_topics: Mutex<std::collections::HashSet<String>>,
    /// `allow.auto.create.topics` (librdkafka's producer default: true). When the client may
    /// create topics on first use, a missing topic is not an error before sending.
    auto_create: bool,
}

/// librdkafka's `RD_KAFKA_PARTITION_UA` (a macro the bindings lack): let the partitioner choose.
const PARTITION_UA: i32 = -1;

/// Messages per `rd_kafka_produce_batch` call.
const PRODUCE_BATCH: usize = 10_000;

/// A librdkafka topic handle owned by a `Producer`.
struct TopicHandle(*mut rd::rd_kafka_topic_t);

// SAFETY: librdkafka topic handles may be used from any thread.
unsafe impl Send for TopicHandle {}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by rd_kafka_topic_new and released once, before the client (field order).
        unsafe { rd::rd_kafka_topic_destroy(self.0) };
    }
}

/// The rows of one `send`: encoded values, optional keys, and where they go.
pub struct RowBatch<'a> {
    pub topic: &'a str,
    pub values: &'a crate::format::EncodedRows,
    pub keys: Option<&'a crate::format::EncodedRows>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// Headers with one value per row (e.g. the lineage of each result), after `headers`.
    pub row_headers: &'a [(String, crate::format::EncodedRows)],
}

impl Producer {
    /// Creates a producer; idempotent with `acks=all` unless the config says otherwise.
    pub fn new(config: &ClientSettings) -> Result<Self> {
        let mut cc = client_config(config);
        if config_value(config, "enable.idempotence").is_none() {
            cc.set("enable.idempotence", "true");
        }
        let inner: Arc<ThreadedProducer<DeliveryTracker>> = Arc::new(
            cc.create_with_context(DeliveryTracker::default())
                .map_err(|e| Error::kafka("cannot create producer", e))?,
        );
        let token_refresher = TokenRefresher::when_needed(&inner, inner.client().native_ptr(), config)?;
        let max_message_bytes = config_value(config, "message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        Ok(Producer {
            topic_handles: Mutex::new(HashMap::new()),
            inner,
            _token_refresher: token_refresher,
            transactional_id: config_value(config, "transactional.id").map(str::to_owned),
            settings: config.clone(),
            sent: AtomicU64::new(0),
            max_message_bytes,
            known_topics: Mutex::new(Default::default()),
            auto_create: config
                .iter()
                .rev()
                .find(|(k, _)| k == "allow.auto.create.topics")
                .is_none_or(|(_, v)| v != "false"),
        })
    }

    /// Queues one message, waiting (and serving delivery reports) while librdkafka's queue is full.
    pub fn send(&self, m: &OutgoingMessage<'_>, tag: MessageTag, timeout: Duration) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], MessageTag> = BaseRecord::with_opaque_to(m.topic, tag);
        if !m.headers.is_empty() {
            // Only when there are headers: an empty header list is still an allocation in C.
            let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
            for (k, v) in &m.headers {
                headers = headers.insert(Header { key: k, value: *v });
            }
            record = record.headers(headers);
        }
        if let Some(k) = m.key {
            record = record.key(k);
        }
        if let Some(v) = m.value {
            record = record.payload(v);
        }
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        if let Some(t) = m.timestamp {
            record = record.timestamp(t);
        }
        // Read the clock only once the queue is found full.
        let mut deadline = None;
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), rec))
                    if Instant::now() < *deadline.get_or_insert_with(|| Instant::now() + timeout)
                        && self.inner.context().hooks.login_failure().is_none() =>
                {
                    record = rec;
                    // The poll thread drains delivery reports; wait briefly for room.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, rec)) => {
                    // Never queued: no report will come for it.
                    let (send, _) = *rec.delivery_opaque;
                    send.settle(1);
                    return Err(Error::kafka(format!("cannot send to topic '{}'", m.topic), e));
                }
            }
        }
    }

    /// With `allow.auto.create.topics=false`, fails unless `topic` exists: a metadata round trip
    /// once per topic, so a typo fails before anything is queued. Otherwise the first send asks
    /// the cluster to create it (a cluster that will not reports the failure per message).
    pub fn check_topic(&self, topic: &str, timeout: Duration) -> Result<()> {
        if self.auto_create
            || self
                .known_topics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(topic)
        {
            return Ok(());
        }
        use rdkafka::producer::Producer as _;
        let md = self
            .inner
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| Error::kafka(format!("cannot fetch metadata of topic '{topic}'"), e))?;
        match md.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                self.known_topics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(topic.to_string());
                Ok(())
            }
            _ => Err(Error::UnknownTopic {
                what: format!("topic '{topic}' (and allow.auto.create.topics is false)"),
                kafka: Some(KafkaCode::from_code(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                )),
            }),
        }
    }

    /// librdkafka's `message.max.bytes` as configured (1 000 000 by default).
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Refuses rows above `message.max.bytes` before any is sent, naming the first.
    pub fn check_sizes(&self, values: &crate::format::EncodedRows) -> Result<()> {
        match values.first_longer_than(self.max_message_bytes) {
            Some((row, len)) => Err(Error::Encode(format!(
                "row {row} encodes to {len} bytes, above message.max.bytes ({})",
                self.max_message_bytes
            ))),
            None => Ok(()),
        }
    }

    /// Queues every row of `batch`; the tracker reports their delivery. A row that cannot be
    /// queued fails the call, saying how many before it were (their reports still arrive).
    pub fn send_rows(&self, batch: &RowBatch<'_>, timeout: Duration) -> Result<Arc<SendTracker>> {
        if batch.headers.is_empty() && batch.row_headers.is_empty() && batch.timestamp.is_none() {
            return self.send_rows_batched(batch, timeout);
        }
        let headers: Vec<(&str, Option<&[u8]>)> = batch
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let rows = batch.values.len();
        let tracker = SendTracker::new(rows);
        for row in 0..rows {
            let msg = OutgoingMessage {
                topic: batch.topic,
                key: batch.keys.and_then(|k| k.row(row)),
                value: batch.values.row(row),
                partition: batch.partition,
                timestamp: batch.timestamp,
                headers: if batch.row_headers.is_empty() {
                    headers.clone()
                } else {
                    let mut all = headers.clone();
                    all.extend(batch.row_headers.iter().map(|(k, v)| (k.as_str(), v.row(row))));
                    all
                },
            };
            if let Err(e) = self.send(&msg, Box::new((tracker.clone(), row)), timeout) {
                tracker.settle(rows - row - 1);
                return Err(match e {
                    Error::Kafka { what, kafka } | Error::Delivery { what, kafka } => Error::Delivery {
                        what: format!(
                            "row {row} of {rows} could not be queued ({row} before it were): {what}"
                        ),
                        kafka,
                    },
                    other => other,
                });
            }
        }
        Ok(tracker)
    }

    /// `send_rows` for rows without headers or timestamps.
    fn send_rows_batched(&self, batch: &RowBatch<'_>, timeout: Duration) -> Result<Arc<SendTracker>> {
        let rows = batch.values.len();
        let tracker = SendTracker::new(rows);
        let queued = self.queue_batched(batch, 0, &tracker, timeout);
        // Rows not queued get no report.
        tracker.settle(rows - queued.as_ref().map_or_else(|(n, _)| *n, |n| *n));
        queued.map(|_| tracker).map_err(|(_, e)| e)
    }

    /// Queues rows that arrive in chunks, each as soon as it is there (a send encodes the next
    /// chunk while this one is queued). `rows` is their total; `keys` are indexed by row over
    /// all chunks. Failing to get a chunk stops the send like a row that cannot be queued.
    pub fn send_chunks(
        &self,
        topic: &str,
        rows: usize,
        keys: Option<&crate::format::EncodedRows>,
        partition: Option<i32>,
        chunks: impl Iterator<Item = Result<crate::format::EncodedRows>>,
        timeout: Duration,
    ) -> Result<Arc<SendTracker>> {
        let tracker = SendTracker::new(rows);
        let mut first_row = 0;
        let result = (|| {
            for chunk in chunks {
                let values = chunk?;
                let batch = RowBatch {
                    topic,
                    values: &values,
                    keys,
                    partition,
                    timestamp: None,
                    headers: &[],
                    row_headers: &[],
                };
                let queued = self.queue_batched(&batch, first_row, &tracker, timeout);
                first_row += queued.as_ref().map_or_else(|(n, _)| *n, |n| *n);
                queued.map_err(|(_, e)| e)?;
            }
            Ok(())
        })();
        tracker.settle(rows - first_row);
        result.map(|()| tracker)
    }

    /// Queues the rows of `batch` (numbered from `first_row` in `tracker` and in errors) with
    /// librdkafka's batch produce call (`rd_kafka_produce_batch`): thousands of messages under
    /// one topic lock and one partition lock, instead of a topic lookup and locks per message.
    /// Returns how many rows were queued, also on failure; rows not queued are not settled.
    fn queue_batched(
        &self,
        batch: &RowBatch<'_>,
        first_row: usize,
        tracker: &Arc<SendTracker>,
        timeout: Duration,
    ) -> std::result::Result<usize, (usize, Error)> {
        let rows = batch.values.len();
        let topic = self.topic_handle(batch.topic).map_err(|e| (0, e))?;
        let partition = batch.partition.unwrap_or(PARTITION_UA);
        let mut messages: Vec<rd::rd_kafka_message_t> = Vec::with_capacity(PRODUCE_BATCH.min(rows));
        let mut deadline = None;
        let mut next = 0;
        while next < rows {
            let end = (next + PRODUCE_BATCH).min(rows);
            messages.clear();
            for row in next..end {
                // SAFETY: all-zero is a valid rd_kafka_message_t (null pointers, no error).
                let mut m: rd::rd_kafka_message_t = unsafe { std::mem::zeroed() };
                if let Some(v) = batch.values.row(row) {
                    m.payload = v.as_ptr() as *mut std::ffi::c_void;
                    m.len = v.len();
                }
                if let Some(k) = batch.keys.and_then(|k| k.row(first_row + row)) {
                    m.key = k.as_ptr() as *mut std::ffi::c_void;
                    m.key_len = k.len();
                }
                // The same opaque `send` gives each message: the delivery callback takes it back.
                let tag: MessageTag = Box::new((tracker.clone(), first_row + row));
                m._private = tag.into_ptr();
                messages.push(m);
            }
            // SAFETY: the handle is valid while `self` lives; each message points at row bytes
            // that librdkafka copies (RD_KAFKA_MSG_F_COPY) before the call returns.
            let queued = unsafe {
                rd::rd_kafka_produce_batch(
                    topic,
                    partition,
                    rd::RD_KAFKA_MSG_F_COPY,
                    messages.as_mut_ptr(),
                    messages.len() as i32,
                )
            };
            self.sent.fetch_add(queued.max(0) as u64, Ordering::Relaxed);
            // Messages that were not queued get no delivery report: take their tags back.
            // A full queue fails that message and every one after it (librdkafka stops at the
            // first), so retrying from there keeps the order.
            let mut queue_full_at = None;
            let mut first_error = None;
            let mut failed = 0;
            for (i, m) in messages.iter().enumerate() {
                if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    continue;
                }
                // SAFETY: set by `into_ptr` above and not taken back: this message was not queued.
                drop(unsafe { MessageTag::from_ptr(m._private) });
                failed += 1;
                if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL {
                    queue_full_at.get_or_insert(next + i);
                } else {
                    first_error.get_or_insert((next + i, rdkafka::types::RDKafkaErrorCode::from(m.err)));
                }
            }
            let queued_so_far = end - failed;
            if let Some((row, code)) = first_error {
                // Any rows after it that were queued report as usual.
                // Classified by code like any librdkafka error (an unknown partition is an
                // `UnknownTopic`), with the rows that were queued named.
                let context = format!(
                    "row {} could not be queued to topic '{}' ({} rows were)",
                    first_row + row,
                    batch.topic,
                    first_row + queued_so_far
                );
                return Err((
                    queued_so_far,
                    Error::kafka(context, KafkaError::MessageProduction(code)),
                ));
            }
            match queue_full_at {
                None => next = end,
                Some(row) => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    if Instant::now() >= deadline {
                        return Err((
                            row,
                            Error::Delivery {
                                what: format!(
                                    "row {} could not be queued to topic '{}' ({} rows were): the \
                                     producer queue stayed full for {timeout:?}",
                                    first_row + row,
                                    batch.topic,
                                    first_row + row
                                ),
                                kafka: Some(KafkaCode::from_code(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                )),
                            },
                        ));
                    }
                    // The poll thread drains delivery reports; wait briefly for room.
                    std::thread::sleep(Duration::from_millis(1));
                    next = row;
                }
            }
        }
        Ok(rows)
    }

    /// librdkafka's handle of a topic, made once per topic and producer.
    fn topic_handle(&self, topic: &str) -> Result<*mut rd::rd_kafka_topic_t> {
        let mut handles = self.topic_handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = handles.get(topic) {
            return Ok(h.0);
        }
        let name = CString::new(topic)
            .map_err(|_| Error::Config(format!("topic name {topic:?} contains a NUL byte")))?;
        // SAFETY: the client pointer is valid while `self.inner` lives; a null config takes
        // the producer's default topic configuration.
        let handle = unsafe {
            rd::rd_kafka_topic_new(
                self.inner.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        if handle.is_null() {
            // SAFETY: reads librdkafka's thread-local last error.
            let code: rdkafka::types::RDKafkaErrorCode = unsafe { rd::rd_kafka_last_error() }.into();
            return Err(Error::kafka(
                format!("cannot use topic '{topic}'"),
                KafkaError::MessageProduction(code),
            ));
        }
        handles.insert(topic.to_string(), TopicHandle(handle));
        Ok(handle)
    }

    /// Queues one message; the tracker reports its delivery.
    pub fn send_one(&self, m: &OutgoingMessage<'_>, timeout: Duration) -> Result<Arc<SendTracker>> {
        let tracker = SendTracker::new(1);
        self.send(m, Box::new((tracker.clone(), 0)), timeout)?;
        Ok(tracker)
    }

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

    /// Waits until every queued message is delivered or failed, or `deadline`.
    fn drain(&self, deadline: Instant) -> KafkaResult<()> {
        // In slices, so a failed login ends the wait at once instead of at the deadline.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_millis(100));
            // librdkafka's own flush: delivery reports are events served by the polling thread,
            // so it just waits until the last message is reported, and returns then.
            // (rust-rdkafka's `flush` polls in 100 ms steps that never end early instead: every
            // flush that had anything to wait for took at least 100 ms.)
            // SAFETY: the client pointer is valid while `self.inner` lives; rd_kafka_flush may
            // be called from any thread.
            let code =
                unsafe { rd::rd_kafka_flush(self.inner.client().native_ptr(), slice.as_millis() as i32) };
            match code {
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => return Ok(()),
                _ if !left.is_zero() => {
                    if self.check_login().is_err() {
                        return Err(KafkaError::Flush(code.into()));
                    }
                }
                e => return Err(KafkaError::Flush(e.into())),
            }
        }
    }

    /// Waits until every queued message is delivered or failed; fails if any failed or some are
    /// still undelivered at the timeout, saying how many.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let flushed = self.drain(Instant::now() + timeout);
        let tracker = self.inner.context();
        let failed = tracker.unreported.swap(0, Ordering::Relaxed);
        if failed > 0 || flushed.is_err() {
            // Messages purged after a failed login or a fatal error: that is the reason.
            self.check_login()?;
        }
        if failed > 0 {
            let first = tracker
                .first_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (where_, err) = first.map(|(w, e)| (w, Some(e))).unwrap_or_default();
            let rdkafka_code = err.as_ref().and_then(|e| e.rdkafka_error_code());
            let code = rdkafka_code.map(KafkaCode::from_code);
            let reason = err.map(|e| e.to_string()).unwrap_or_default();
            let what = format!("{failed} message(s) failed; first at {where_}: {reason}");
            if let Some(kind) = rdkafka_code.and_then(resource_kind) {
                // Denied by an ACL: the resource is the topic, or the transactional id.
                let (resource, operation) = match (kind, &self.transactional_id) {
                    ("transactional id", Some(id)) => (format!("transactional id '{id}'"), "write"),
                    _ => (where_.clone(), "write"),
                };
                return Err(Error::Authorization {
                    what: format!("{what} ({operation} on {resource})"),
                    resource,
                    operation: operation.to_owned(),
                    kafka: code,
                });
            }
            return Err(Error::Delivery { what, kafka: code });
        }
        if let Err(e) = flushed {
            let pending = self.inner.in_flight_count();
            let code = e.rdkafka_error_code().map(KafkaCode::from_code);
            return Err(Error::Timeout {
                what: format!("flush: {pending} message(s) not delivered after {timeout:?}"),
                kafka: code,
            });
        }
        Ok(())
    }

    pub fn delivered(&self) -> u64 {
        self.inner.context().delivered.load(Ordering::Relaxed)
    }

    /// Fails with the cluster's refusal if a login failed (wrong credentials, untrusted
    /// certificate), or with the producer's fatal error (e.g. no right to an idempotent or
    /// transactional producer id). librdkafka would retry a login until `message.timeout.ms`
    /// (5 min): instead, every queued message is purged, so each send fails now with the reason.
    /// (After a fatal error librdkafka has purged them itself.)
    pub fn check_login(&self) -> Result<()> {
        if let Some(e) = self.inner.context().hooks.login_failure() {
            self.inner.purge(PurgeConfig::default().queue().inflight());
            return Err(explain(e, &self.settings));
        }
        match self.inner.client().fatal_error() {
            None => Ok(()),
            Some((code, reason)) => {
                let what = format!("the producer failed for good: {}", crate::client::redact(&reason));
                let kafka = Some(KafkaCode::from_code(code));
                Err(match (resource_kind(code), &self.transactional_id) {
                    (Some("transactional id"), Some(id)) => Error::Authorization {
                        what,
                        resource: format!("transactional id '{id}'"),
                        operation: "write".to_owned(),
                        kafka,
                    },
                    // An idempotent producer needs the right to write somewhere to get its id.
                    (Some(kind), _) => Error::Authorization {
                        what,
                        resource: kind.to_owned(),
                        operation: "idempotent write".to_owned(),
                        kafka,
                    },
                    (None, _) => Error::Kafka { what, kafka },
                })
            }
        }
    }

    pub fn failed(&self) -> u64 {
        self.inner.context().failed.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::EncodedRows;
    use arrow_buffer::Buffer;

    /// `rows` one-byte rows in chunks of `chunk`.
    fn chunks(rows: usize, chunk: usize) -> Vec<Result<EncodedRows>> {
        (0..rows)
            .step_by(chunk)
            .map(|start| {
                let bytes: Vec<u8> = (start..rows.min(start + chunk)).map(|i| i as u8).collect();
                Ok(EncodedRows::fixed_width(Buffer::from_vec(bytes), 1))
            })
            .collect()
    }

    /// Waits until the delivery callback has dropped every tag: only `tracker` itself is left.
    fn tags_released(tracker: &Arc<SendTracker>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(tracker) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Arc::strong_count(tracker) == 1
    }

    /// Batched rows carry their tag in librdkafka's `_private` field of `rd_kafka_message_t`,
    /// which rust-rdkafka's delivery callback turns back into the `DeliveryOpaque` (a private
    /// coupling, not an API). If that changed, tags would leak (never taken back) or be read
    /// from the wrong place: this names every row's report and counts the tags taken back.
    #[test]
    fn every_batched_row_gets_its_own_failure_report() {
        // Nothing listens there: every message times out in librdkafka's queue and is reported
        // failed through the delivery callback.
        let producer = Producer::new(
            &vec![
                ("bootstrap.servers".to_string(), "127.0.0.1:9".to_string()),
                ("message.timeout.ms".to_string(), "200".to_string()),
            ]
            .into(),
        )
        .unwrap();
        let rows = 90;
        let tracker = producer
            .send_chunks(
                "tags",
                rows,
                None,
                Some(0),
                chunks(rows, 40).into_iter(),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(tracker.wait(Duration::from_secs(30)), "reports missing");
        assert_eq!((tracker.delivered(), tracker.failed()), (0, rows as u64));
        let mut reported: Vec<usize> = tracker.failures().into_iter().map(|(row, _)| row).collect();
        reported.sort_unstable();
        assert_eq!(
            reported,
            (0..rows).collect::<Vec<_>>(),
            "rows numbered across chunks"
        );
        assert!(
            tags_released(&tracker),
            "{} tags never taken back",
            Arc::strong_count(&tracker) - 1
        );
    }

    #[test]
    fn every_batched_row_is_reported_delivered() {
        let cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> =
            rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("tags", 1, 1).unwrap();
        let producer =
            Producer::new(&vec![("bootstrap.servers".to_string(), cluster.bootstrap_servers())].into())
                .unwrap();
        let rows = 2_500;
        let tracker = producer
            .send_chunks(
                "tags",
                rows,
                None,
                Some(0),
                chunks(rows, 1_000).into_iter(),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(tracker.wait(Duration::from_secs(30)), "reports missing");
        assert_eq!((tracker.delivered(), tracker.failed()), (rows as u64, 0));
        assert!(
            tags_released(&tracker),
            "{} tags never taken back",
            Arc::strong_count(&tracker) - 1
        );
    }
}
