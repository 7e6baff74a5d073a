//! Python bindings of the core: argument conversion, GIL release and error mapping only.

mod admin;
mod arrow_numpy;
mod client;
mod consumer;
mod errors;
mod producer;
mod protobuf;
mod registry;

use crate::error::Error;
use arc_swap::ArcSwapOption;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The one door for every call that can block: waits in slices with the GIL released and checks
/// for Ctrl-C between slices, so a blocked call wakes with `KeyboardInterrupt`.
///
/// `step` does up to one slice of work; `Some` ends the wait.
pub(crate) fn blocking<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut step: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>> {
    const SLICE: Duration = Duration::from_millis(100);
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        if let Some(out) = py.detach(|| step(slice)) {
            return Ok(Some(out));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// Runs `future` on this thread for up to `timeout`: its output, or `None` if it was not ready
/// in time (the future is then dropped, so it must be cancel-safe).
///
/// For waits on several `tokio::sync::Notify`-based events at once from a Python thread (input
/// arrived *or* deliveries reported): the future is polled right here and a wake-up unparks this
/// thread directly, with no runtime and no other thread on the path.
pub(crate) fn block_on_for<F: std::future::Future>(future: F, timeout: Duration) -> Option<F::Output> {
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // A wake between the poll and this park is not lost: `unpark` before `park` makes the
        // park return at once. Spurious returns just poll again.
        std::thread::park_timeout(deadline - now);
    }
}

/// A one-shot blocking call that cannot be cut into slices (a commit, a metadata round trip, a
/// transaction step, opening a consumer) through the same door: it runs on a helper thread while
/// this one waits in slices with the GIL released, so Ctrl-C raises `KeyboardInterrupt` at once.
/// The call itself then ends on its own, bounded by its own timeout, and its result is dropped.
pub(crate) fn blocking_call<T: Send + 'static>(
    py: Python<'_>,
    call: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("kafka-ml-call".into())
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| errors::to_pyerr(Error::Config(format!("cannot start a thread: {e}"))))?;
    let answer = blocking(py, None, move |slice| match rx.recv_timeout(slice) {
        Ok(value) => Some(Some(value)),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => Some(None),
    })?;
    answer.flatten().ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("a kafka-ml call failed unexpectedly (its thread panicked)")
    })
}

/// The longest wait: librdkafka takes timeouts as `int` milliseconds, so a longer one (a number
/// meant as "forever") waits this long, about 24.8 days.
const MAX_WAIT: Duration = Duration::from_millis(i32::MAX as u64);

/// The one conversion of a timeout argument (float seconds) to a `Duration`: NaN, infinities and
/// negative numbers are a `ConfigError` naming the argument, never a panic.
pub(crate) fn seconds(argument: &str, value: f64) -> PyResult<Duration> {
    if value.is_nan() || value.is_infinite() || value < 0.0 {
        return Err(errors::to_pyerr(Error::Config(format!(
            "{argument}={value}: expected a finite number of seconds, 0 or more"
        ))));
    }
    Ok(Duration::try_from_secs_f64(value).map_or(MAX_WAIT, |d| d.min(MAX_WAIT)))
}

/// Like `seconds`, for waits that must not be zero.
pub(crate) fn positive_seconds(argument: &str, value: f64) -> PyResult<Duration> {
    match seconds(argument, value)? {
        d if d.is_zero() => Err(errors::to_pyerr(Error::Config(format!(
            "{argument}={value}: expected a finite number of seconds above 0"
        )))),
        d => Ok(d),
    }
}

/// How many times this process's lineage has forked (through Python: `os.fork`,
/// multiprocessing's fork start method, a DataLoader worker): one more in each child.
static FORKS: AtomicU64 = AtomicU64::new(0);

#[pyfunction]
fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    crate::client::fork::note_fork_in_child();
}

/// The process a native object with threads or a librdkafka client was made in. A forked child
/// inherits the object's memory but none of its threads: waiting on them (a join, a queue their
/// thread fills, a librdkafka call) would hang forever, so the child gets `ForkedProcessError`
/// instead, and dropping the object there leaves it alone (`is_inherited`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Birthplace(u64);

impl Birthplace {
    pub(crate) fn here() -> Self {
        Birthplace(FORKS.load(Ordering::Relaxed))
    }

    pub(crate) fn is_inherited(self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.0
    }

    /// Fails with `ForkedProcessError` in a forked child.
    pub(crate) fn check(self, what: &'static str) -> PyResult<()> {
        if self.is_inherited() {
            let remedy = match what {
                "async runtime" => {
                    "The async API cannot run in a child forked after its parent used it: start \
                     the child with multiprocessing's 'spawn' or 'forkserver' method instead"
                }
                "reader" => {
                    "Create the reader in the child: iterating a KafkaDataset there starts a pass \
                     of the child's own"
                }
                _ => "Create it in the child instead (e.g. in a DataLoader worker_init_fn)",
            };
            return Err(errors::to_pyerr(Error::Forked { what, remedy }));
        }
        Ok(())
    }
}

/// The core half of a native object that owns threads or a librdkafka client (a reader, a
/// producer), shared with the calls in flight (each holds an `Arc` of it while it runs) and with
/// other handles on the same object (`share`: a producer's `SendReport`s). The object lives
/// until the last handle is dropped, or until `close` empties every handle at once. Dropping it
/// can take seconds (joining a thread, leaving a group, purging), so that runs with the GIL
/// released: a garbage collection that frees it does not stall every other Python thread
/// meanwhile. In a forked child it is never dropped (`Birthplace`).
pub(crate) struct Native<T: Send + Sync> {
    /// `None` only once dropped.
    slot: Option<Arc<ArcSwapOption<T>>>,
    birthplace: Birthplace,
}

impl<T: Send + Sync> Native<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        Native {
            slot: Some(Arc::new(ArcSwapOption::from(Some(value)))),
            birthplace: Birthplace::here(),
        }
    }

    /// Another handle on the same object: it keeps the object alive too, and `close` on either
    /// closes both.
    pub(crate) fn share(&self) -> Self {
        Native {
            slot: self.slot.clone(),
            birthplace: self.birthplace,
        }
    }

    fn slot(&self) -> &ArcSwapOption<T> {
        self.slot.as_ref().expect("present until dropped")
    }

    /// The object, `ForkedProcessError` in a process forked after it was made, or `ClosedError`
    /// (naming `what`) after `close`.
    pub(crate) fn get(&self, what: &'static str) -> PyResult<Arc<T>> {
        self.open(what)?
            .ok_or_else(|| errors::to_pyerr(Error::Closed(what)))
    }

    /// The object, or `None` after `close`; `ForkedProcessError` in a forked child.
    pub(crate) fn open(&self, what: &'static str) -> PyResult<Option<Arc<T>>> {
        self.birthplace.check(what)?;
        Ok(self.slot().load_full())
    }

    /// Releases the object for every handle: it is dropped (GIL released) as soon as no call
    /// in flight holds it. A no-op when closed already, and in a forked child (the object's
    /// threads are the parent's).
    pub(crate) fn close(&self) {
        if !self.birthplace.is_inherited() {
            if let Some(value) = self.slot().swap(None) {
                release(value);
            }
        }
    }

    pub(crate) fn is_inherited(&self) -> bool {
        self.birthplace.is_inherited()
    }
}

impl<T: Send + Sync> Drop for Native<T> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if self.birthplace.is_inherited() {
            // Its threads are the parent's: dropping it here would wait for them forever.
            std::mem::forget(slot);
            return;
        }
        // Other handles (a `SendReport` of the producer) keep it: cheap.
        if let Some(value) = Arc::into_inner(slot).and_then(|slot| slot.into_inner()) {
            release(value);
        }
    }
}

/// Drops `value` with the GIL released if this was its last reference (a call in flight may
/// still hold it: then that call's end drops it).
fn release<T: Send + Sync>(value: Arc<T>) {
    let Some(last) = Arc::into_inner(value) else {
        return;
    };
    Python::attach(|py| {
        // The drop may run while an exception propagates (the object freed by the unwinding
        // of a `list(KafkaDataset(...))` that raised): Python calls must not see or consume
        // it, so it is set aside and restored.
        let propagating = PyErr::take(py);
        // While the interpreter shuts down, a thread must not take the GIL back: drop here.
        let finalizing = py
            .import("sys")
            .and_then(|sys| sys.call_method0("is_finalizing"))
            .and_then(|f| f.extract::<bool>())
            .unwrap_or(true);
        if finalizing {
            drop(last);
        } else {
            py.detach(move || drop(last));
        }
        if let Some(e) = propagating {
            e.restore(py);
        }
    });
}

/// Where the shared tokio runtime (the async API) was started, once it is.
static RUNTIME_BIRTHPLACE: std::sync::OnceLock<Birthplace> = std::sync::OnceLock::new();

/// The shared tokio runtime, refused in a process forked after it started: its worker threads
/// stayed in the parent, so a future given to it here would never run.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    RUNTIME_BIRTHPLACE
        .get_or_init(Birthplace::here)
        .check("async runtime")?;
    Ok(pyo3_async_runtimes::tokio::get_runtime())
}

/// `future_into_py` on the shared runtime, after the fork check of `runtime`.
pub(crate) fn future_into_py<'py, F, T>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: std::future::Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime()?;
    pyo3_async_runtimes::tokio::future_into_py(py, future)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let fork_hook = pyo3::types::PyDict::new(m.py());
    fork_hook.set_item("after_in_child", wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.py()
        .import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&fork_hook))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("librdkafka_version", rdkafka::util::get_rdkafka_version().1)?;
    consumer::register(m)?;
    producer::register(m)?;
    admin::register(m)?;
    client::register(m)?;
    registry::register(m)?;
    protobuf::register(m)?;
    Ok(())
}
