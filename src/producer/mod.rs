//! A librdkafka producer with delivery accounting: every message is counted as delivered or
//! failed by librdkafka's delivery reports, and `flush` tells which failed and why.
//! Used for dead-letter topics, the embedded demo and the Python `Producer`.
//!
//! - `delivery`: the delivery reports, counted per send (`SendTracker`);
//! - `batched`: many rows per librdkafka call (`send_rows`, `send_chunks`);
//! - `transactions`: the transactional producer's steps;
//! - `table_send`: an Arrow table in, one message per row out (collect, conform, encode, queue).

mod batched;
mod delivery;
mod table_send;
mod transactions;

pub use batched::RowBatch;
use delivery::DeliveryTracker;
pub use delivery::{MessageTag, SendTracker};
pub(crate) use table_send::{TableSend, ENQUEUE_TIMEOUT};

use self::batched::TopicHandle;
use crate::client::{
    client_config, config_value, explain, ClientSettings, HasHooks, OpenSslClient, TokenRefresher,
};
use crate::error::{resource_kind, Error, KafkaCode, Result};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, PurgeConfig, ThreadedProducer};
use rdkafka_sys::bindings as rd;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// librdkafka's `queue.buffering.max.messages`: a send of more has to wait for room.
    max_queued_messages: usize,
    /// Topics whose existence was checked already.
    known_topics: Mutex<std::collections::HashSet<String>>,
    /// `allow.auto.create.topics` (librdkafka's producer default: true). When the client may
    /// create topics on first use, a missing topic is not an error before sending.
    auto_create: bool,
}

impl Producer {
    /// Creates a producer; idempotent with `acks=all` unless the config says otherwise.
    pub fn new(config: &ClientSettings) -> Result<Self> {
        let openssl_client = OpenSslClient::claim(config)?;
        let mut cc = client_config(config);
        if config_value(config, "enable.idempotence").is_none() {
            cc.set("enable.idempotence", "true");
        }
        let inner: Arc<ThreadedProducer<DeliveryTracker>> = Arc::new(
            cc.create_with_context(DeliveryTracker::default())
                .map_err(|e| Error::kafka("cannot create producer", e))?,
        );
        inner.context().hooks().keep(openssl_client);
        let token_refresher = TokenRefresher::when_needed(&inner, inner.client().native_ptr(), config)?;
        let max_message_bytes = config_value(config, "message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let max_queued_messages = config_value(config, "queue.buffering.max.messages")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        Ok(Producer {
            topic_handles: Mutex::new(HashMap::new()),
            inner,
            _token_refresher: token_refresher,
            transactional_id: config_value(config, "transactional.id").map(str::to_owned),
            settings: config.clone(),
            sent: AtomicU64::new(0),
            max_message_bytes,
            max_queued_messages,
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
        if self.topic_known(topic) {
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

    /// Whether a send to `topic` needs no metadata look-up first: the cluster may create it, or
    /// it was found already.
    fn topic_known(&self, topic: &str) -> bool {
        self.auto_create
            || self
                .known_topics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(topic)
    }

    /// Whether a send of `rows` messages to `topic` can be queued now without waiting: no
    /// metadata look-up of the topic first, and room for every row in librdkafka's queue (by
    /// message count; the queue's byte limit, 1 GiB by default, is not checked). Another thread
    /// sending meanwhile can still make it wait for room, briefly.
    pub fn can_queue_without_waiting(&self, topic: &str, rows: usize) -> bool {
        self.topic_known(topic)
            && self.inner.in_flight_count().max(0) as usize + rows <= self.max_queued_messages
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

    /// Queues one message; the tracker reports its delivery.
    pub fn send_one(&self, m: &OutgoingMessage<'_>, timeout: Duration) -> Result<Arc<SendTracker>> {
        let tracker = SendTracker::new(1);
        self.send(m, Box::new((tracker.clone(), 0)), timeout)?;
        Ok(tracker)
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
