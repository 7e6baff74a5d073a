//! Many rows per librdkafka call: a send's rows are queued with `rd_kafka_produce_batch`
//! (thousands of messages under one topic lock), each tagged with its send and row so its
//! delivery report finds its way back.

use super::{MessageTag, OutgoingMessage, Producer, SendTracker};
use crate::error::{Error, KafkaCode, Result};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::util::IntoOpaque;
use rdkafka_sys::bindings as rd;
use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// librdkafka's `RD_KAFKA_PARTITION_UA` (a macro the bindings lack): let the partitioner choose.
const PARTITION_UA: i32 = -1;

/// Messages per `rd_kafka_produce_batch` call.
const PRODUCE_BATCH: usize = 10_000;

/// A librdkafka topic handle owned by a `Producer`.
pub(super) struct TopicHandle(*mut rd::rd_kafka_topic_t);

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
