//! A librdkafka producer with delivery accounting: every message is counted as delivered or
//! failed by librdkafka's delivery reports, and `flush` tells which failed and why.
//! Used for dead-letter topics, the embedded demo and the Python `Producer`.

use crate::error::{Error, KafkaCode, Result};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts delivery reports; remembers the first failure.
#[derive(Default)]
pub struct DeliveryTracker {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Failures not yet reported by a `flush`: each failure is raised once.
    unreported: AtomicU64,
    first_failure: Mutex<Option<(String, KafkaError)>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
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
    /// A background thread serves delivery reports, so they are counted (and transactions can
    /// flush or abort) whatever the caller does.
    inner: ThreadedProducer<DeliveryTracker>,
    /// Messages handed to librdkafka so far.
    sent: AtomicU64,
    /// librdkafka's `message.max.bytes`: larger rows are refused before anything is sent.
    max_message_bytes: usize,
    /// Topics whose existence was checked already.
    known_topics: Mutex<std::collections::HashSet<String>>,
}

/// The rows of one `send`: encoded values, optional keys, and where they go.
pub struct RowBatch<'a> {
    pub topic: &'a str,
    pub values: &'a crate::encode::EncodedRows,
    pub keys: Option<&'a crate::encode::EncodedRows>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

impl Producer {
    /// Creates a producer; idempotent with `acks=all` unless the config says otherwise.
    pub fn new(config: &[(String, String)]) -> Result<Self> {
        let mut cc = ClientConfig::new();
        cc.set("enable.idempotence", "true");
        for (k, v) in config {
            cc.set(k, v);
        }
        let inner = cc
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| Error::kafka("cannot create producer", e))?;
        let max_message_bytes = config
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1_000_000);
        Ok(Producer {
            inner,
            sent: AtomicU64::new(0),
            max_message_bytes,
            known_topics: Mutex::new(Default::default()),
        })
    }

    /// Queues one message, waiting (and serving delivery reports) while librdkafka's queue is full.
    pub fn send(&self, m: &OutgoingMessage<'_>, timeout: Duration) -> Result<()> {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header { key: k, value: *v });
        }
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(m.topic).headers(headers);
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
        let deadline = Instant::now() + timeout;
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), rec))
                    if Instant::now() < deadline =>
                {
                    record = rec;
                    // The poll thread drains delivery reports; wait for room.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(Error::kafka(format!("cannot send to topic '{}'", m.topic), e)),
            }
        }
    }

    /// Fails unless `topic` exists (or the cluster creates it on first use): a metadata round
    /// trip once per topic, so a typo fails before anything is queued.
    pub fn check_topic(&self, topic: &str, timeout: Duration) -> Result<()> {
        if self
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
                what: format!("topic '{topic}' (and the cluster does not create it on first use)"),
                kafka: Some(KafkaCode::from_code(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                )),
            }),
        }
    }

    /// Refuses rows above `message.max.bytes` before any is sent, naming the first.
    pub fn check_sizes(&self, values: &crate::encode::EncodedRows) -> Result<()> {
        match values.first_longer_than(self.max_message_bytes) {
            Some((row, len)) => Err(Error::Encode(format!(
                "row {row} encodes to {len} bytes, above message.max.bytes ({})",
                self.max_message_bytes
            ))),
            None => Ok(()),
        }
    }

    /// Queues every row of `batch`; returns how many were queued.
    pub fn send_rows(&self, batch: &RowBatch<'_>, timeout: Duration) -> Result<usize> {
        let headers: Vec<(&str, Option<&[u8]>)> = batch
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        for row in 0..batch.values.len() {
            let msg = OutgoingMessage {
                topic: batch.topic,
                key: batch.keys.and_then(|k| k.row(row)),
                value: batch.values.row(row),
                partition: batch.partition,
                timestamp: batch.timestamp,
                headers: headers.clone(),
            };
            self.send(&msg, timeout).map_err(|e| match e {
                Error::Kafka { what, kafka } | Error::Delivery { what, kafka } => Error::Delivery {
                    what: format!(
                        "row {row} of {} could not be queued ({row} before it were): {what}",
                        batch.values.len()
                    ),
                    kafka,
                },
                other => other,
            })?;
        }
        Ok(batch.values.len())
    }

    /// Registers the `transactional.id` with the cluster, fencing older producers that used it.
    pub fn init_transactions(&self, timeout: Duration) -> Result<()> {
        self.inner
            .init_transactions(timeout)
            .map_err(|e| Error::kafka("init_transactions", e))
    }

    pub fn begin_transaction(&self) -> Result<()> {
        self.inner
            .begin_transaction()
            .map_err(|e| Error::kafka("begin_transaction", e))
    }

    /// Sends what is queued and commits it, with any offsets sent to the transaction, atomically.
    pub fn commit_transaction(&self, timeout: Duration) -> Result<()> {
        self.inner
            .commit_transaction(timeout)
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
        offsets: &crate::batch::OffsetMap,
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

    /// Waits until every queued message is delivered or failed; fails if any failed or some are
    /// still undelivered at the timeout, saying how many.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let flushed = self.inner.flush(timeout);
        let tracker = self.inner.context();
        let failed = tracker.unreported.swap(0, Ordering::Relaxed);
        if failed > 0 {
            let first = tracker
                .first_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (where_, err) = first.map(|(w, e)| (w, Some(e))).unwrap_or_default();
            let code = err
                .as_ref()
                .and_then(|e| e.rdkafka_error_code())
                .map(KafkaCode::from_code);
            let reason = err.map(|e| e.to_string()).unwrap_or_default();
            return Err(Error::Delivery {
                what: format!("{failed} message(s) failed; first at {where_}: {reason}"),
                kafka: code,
            });
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

    pub fn failed(&self) -> u64 {
        self.inner.context().failed.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
