//! A FIFO between the consumer thread and the reader, bounded in bytes.
//!
//! The consumer thread blocks while the queued batches hold more than `capacity_bytes`, so memory
//! stays flat however large the topic is. One item is always admitted into an empty queue, so a
//! batch larger than the bound still makes progress. Readers wait either blocking (the Python
//! iterator, with the GIL released) or asynchronously (`async for`), without a thread per wait.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

struct State<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    closed: bool,
}

pub struct ByteBoundedQueue<T> {
    state: Mutex<State<T>>,
    capacity_bytes: usize,
    /// Wakes the producer when space frees up, and blocking readers when an item arrives.
    changed: Condvar,
    /// Wakes async readers when an item arrives or the queue closes.
    arrived: Notify,
}

/// What a pop found.
pub enum Popped<T> {
    Item(T),
    /// Nothing arrived within the wait.
    Empty,
    /// The queue is closed and drained.
    Closed,
}

impl<T> ByteBoundedQueue<T> {
    pub fn new(capacity_bytes: usize) -> Self {
        ByteBoundedQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            capacity_bytes,
            changed: Condvar::new(),
            arrived: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue inconsistent (every mutation
        // is a single push/pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an item of `bytes` size, waiting up to `timeout` for room. Returns the item back
    /// if there was no room in time, and `Err(None)`-like `Closed` if the queue was closed.
    pub fn push(&self, item: T, bytes: usize, timeout: Duration) -> Result<(), PushError<T>> {
        let mut st = self.lock();
        let deadline = std::time::Instant::now() + timeout;
        while !st.closed && !st.items.is_empty() && st.bytes + bytes > self.capacity_bytes {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(PushError::Full(item));
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if st.closed {
            return Err(PushError::Closed);
        }
        st.bytes += bytes;
        st.items.push_back((item, bytes));
        drop(st);
        self.changed.notify_all();
        self.arrived.notify_waiters();
        Ok(())
    }

    fn take(&self, st: &mut State<T>) -> Option<Popped<T>> {
        if let Some((item, bytes)) = st.items.pop_front() {
            st.bytes -= bytes;
            self.changed.notify_all();
            return Some(Popped::Item(item));
        }
        st.closed.then_some(Popped::Closed)
    }

    /// Takes the oldest item, waiting up to `timeout`.
    pub fn pop(&self, timeout: Duration) -> Popped<T> {
        let mut st = self.lock();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.take(&mut st) {
                return p;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Popped::Empty;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Takes the oldest item, waiting asynchronously for one.
    pub async fn pop_async(&self) -> Popped<T> {
        loop {
            // Register interest before checking, so an item pushed in between is not missed.
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.take(&mut self.lock()) {
                return p;
            }
            notified.await;
        }
    }

    /// Marks the end of the stream: readers drain what is queued and then see `Closed`;
    /// a blocked producer returns at once.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
        self.arrived.notify_waiters();
    }

    /// Drops every queued item (used on close, so buffered batches free their memory).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.items.clear();
        st.bytes = 0;
        drop(st);
        self.changed.notify_all();
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

pub enum PushError<T> {
    Full(T),
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_bytes_but_admits_one_oversized_item() {
        let q = ByteBoundedQueue::new(10);
        assert!(
            q.push(1, 100, Duration::ZERO).is_ok(),
            "an empty queue admits any item"
        );
        assert!(matches!(
            q.push(2, 1, Duration::from_millis(10)),
            Err(PushError::Full(2))
        ));
        assert!(matches!(q.pop(Duration::ZERO), Popped::Item(1)));
        assert!(q.push(2, 6, Duration::ZERO).is_ok());
        assert!(q.push(3, 4, Duration::ZERO).is_ok());
        assert!(matches!(q.push(4, 1, Duration::ZERO), Err(PushError::Full(4))));
        assert_eq!(q.queued_bytes(), 10);
        q.close();
        assert!(matches!(q.pop(Duration::ZERO), Popped::Item(2)));
        assert!(matches!(q.pop(Duration::ZERO), Popped::Item(3)));
        assert!(matches!(q.pop(Duration::ZERO), Popped::Closed));
        assert!(matches!(q.push(5, 1, Duration::ZERO), Err(PushError::Closed)));
    }

    #[test]
    fn blocked_producer_wakes_when_a_reader_takes() {
        let q = Arc::new(ByteBoundedQueue::new(1));
        q.push(0, 1, Duration::ZERO).ok();
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.push(1, 1, Duration::from_secs(10)).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(q.pop(Duration::ZERO), Popped::Item(0)));
        assert!(t.join().unwrap());
        assert!(matches!(q.pop(Duration::from_secs(1)), Popped::Item(1)));
    }

    #[test]
    fn async_pop_wakes_on_push_and_close() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let q = Arc::new(ByteBoundedQueue::new(100));
        let q2 = q.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q2.push(7, 1, Duration::ZERO).ok();
            q2.close();
        });
        rt.block_on(async {
            assert!(matches!(q.pop_async().await, Popped::Item(7)));
            assert!(matches!(q.pop_async().await, Popped::Closed));
        });
    }
}
