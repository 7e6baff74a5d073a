//! librdkafka's batch consume API (`rd_kafka_consume_batch_queue`): many messages per call
//! under one queue lock, without the per-message event wrapper, clock read and allocation of
//! rust-rdkafka's `poll`. confluent-kafka-python's `consume(n)` uses the same call.
//!
//! It serves non-message operations on the queue itself and would abort on ones it cannot turn
//! into messages (commit replies without a callback, rebalances without one). So it is only used
//! for explicitly assigned consumers that never commit; group consumers go through `poll`.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka_sys::bindings as rd;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// The consumer's queue, read in batches. It holds its consumer, so the client outlives the
/// queue handle and every message taken from it (`RawMessage` borrows the queue).
pub struct BatchQueue {
    queue: *mut rd::rd_kafka_queue_t,
    slots: Vec<*mut rd::rd_kafka_message_t>,
    /// Released after `queue` is destroyed (`Drop` runs before the fields are dropped).
    _consumer: Arc<dyn Send + Sync>,
}

// SAFETY: librdkafka queue handles may be used from any thread, and `fill` takes `&mut self`,
// so one thread at a time uses it.
unsafe impl Send for BatchQueue {}

impl BatchQueue {
    /// # Safety
    /// The consumer must not be subscribed and must never commit offsets: the batch call would
    /// abort on a rebalance or a commit reply it cannot turn into a message (see module docs).
    pub unsafe fn new<K, C>(consumer: Arc<K>, capacity: usize) -> Self
    where
        K: Deref<Target = BaseConsumer<C>> + Send + Sync + 'static,
        C: ConsumerContext,
    {
        // SAFETY: the client pointer is valid while the consumer lives, and the queue keeps it.
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        BatchQueue {
            queue,
            slots: vec![std::ptr::null_mut(); capacity.max(1)],
            _consumer: consumer,
        }
    }

    /// Takes up to `capacity` messages, waiting up to `timeout` for the first.
    pub fn fill(&mut self, timeout: Duration) -> Result<Vec<RawMessage<'_>>, KafkaError> {
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `slots` has room for `slots.len()` message pointers.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue,
                timeout_ms,
                self.slots.as_mut_ptr(),
                self.slots.len(),
            )
        };
        if n < 0 {
            // SAFETY: reads librdkafka's thread-local last error.
            let code: RDKafkaErrorCode = unsafe { rd::rd_kafka_last_error() }.into();
            return Err(KafkaError::MessageConsumption(code));
        }
        // Each topic's name is read once per call, not once per message and use: every message
        // holds its topic handle, so within a call a handle pointer names one topic.
        let mut names: Vec<(*mut rd::rd_kafka_topic_t, Arc<str>)> = Vec::new();
        Ok(self.slots[..n as usize]
            .iter()
            .map(|&ptr| {
                // SAFETY: librdkafka returned `n` live messages.
                let rkt = unsafe { (*ptr).rkt };
                let topic = match names.iter().find(|(handle, _)| *handle == rkt) {
                    Some((_, name)) => name.clone(),
                    None => {
                        let name: Arc<str> = topic_name(rkt).into();
                        names.push((rkt, name.clone()));
                        name
                    }
                };
                RawMessage {
                    ptr,
                    topic,
                    _queue: PhantomData,
                }
            })
            .collect())
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_queue_get_consumer and is released once.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// A topic handle's name ("" for a message without one).
fn topic_name(rkt: *mut rd::rd_kafka_topic_t) -> String {
    if rkt.is_null() {
        return String::new();
    }
    // SAFETY: a live topic handle has a NUL-terminated name that lives as long as it.
    unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(rkt)) }
        .to_string_lossy()
        .into_owned()
}

/// One message (or per-partition event such as EOF) owned until dropped. It borrows the queue
/// it came from, which holds the client: librdkafka messages must be destroyed before their
/// client is.
pub struct RawMessage<'q> {
    ptr: *mut rd::rd_kafka_message_t,
    topic: Arc<str>,
    _queue: PhantomData<&'q BatchQueue>,
}

impl Drop for RawMessage<'_> {
    fn drop(&mut self) {
        // SAFETY: each message returned by the batch call is destroyed exactly once.
        unsafe { rd::rd_kafka_message_destroy(self.ptr) };
    }
}

/// A byte slice from a librdkafka pointer and length (None for a null pointer).
///
/// # Safety
/// `ptr` must point to `len` readable bytes that live as long as `'a`.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }
}

impl RawMessage<'_> {
    fn inner(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the pointer is a live message until `drop`, and its client lives (the
        // borrowed queue holds it).
        unsafe { &*self.ptr }
    }

    /// The per-message error (`_PARTITION_EOF`, fetch errors), if any.
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        let err = self.inner().err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err.into())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.inner().partition
    }

    pub fn offset(&self) -> i64 {
        self.inner().offset
    }

    pub fn key(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka owns the key for the message's lifetime.
        unsafe { bytes(self.inner().key, self.inner().key_len) }
    }

    pub fn payload(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka owns the payload for the message's lifetime.
        unsafe { bytes(self.inner().payload, self.inner().len) }
    }

    pub fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: reads the message's timestamp into a local.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.ptr, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0).then_some(ts)
    }

    pub fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: librdkafka parses the headers into storage owned by the message.
        let err = unsafe { rd::rd_kafka_message_headers(self.ptr, &mut hdrs) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for idx in 0.. {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: index-based read of the message's header list.
            let err = unsafe { rd::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: header names and values live as long as the message.
            let key = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("");
            out.push((key, unsafe { bytes(value, size) }));
        }
        out
    }
}
