//! Delivery reports: librdkafka reports every message delivered or failed, and each report is
//! counted against the send its message belongs to.

use crate::client::ClientHooks;
use crate::error::{Error, Result};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counts delivery reports; remembers the first failure.
#[derive(Default)]
pub struct DeliveryTracker {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Failures not yet reported by a `flush`: each failure is raised once.
    pub(super) unreported: AtomicU64,
    pub(super) first_failure: Mutex<Option<(String, KafkaError)>>,
    pub(super) hooks: ClientHooks,
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
    pub(super) fn settle(&self, count: usize) {
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
