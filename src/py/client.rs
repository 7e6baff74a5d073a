//! Bindings of `client`: connection settings from a Python config dict (with an `oauth_cb`
//! token callback), the log bridge to Python's `logging`, and what librdkafka was built with.

use crate::client::{ClientSettings, OAuthToken, TokenSource};
use arc_swap::ArcSwapOption;
use base64::Engine as _;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// A config dict: librdkafka properties as strings, and optionally `oauth_cb`, called as
/// `oauth_cb(sasl.oauthbearer.config)` and returning `(token, expiry_epoch_seconds)` or
/// `(token, expiry, principal)` or `(token, expiry, principal, {extension: value})` — the
/// contract of confluent-kafka's `oauth_cb`.
impl<'a, 'py> FromPyObject<'a, 'py> for ClientSettings {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let dict = obj.cast::<PyDict>()?;
        let mut properties = Vec::with_capacity(dict.len());
        let mut token_source: Option<std::sync::Arc<dyn TokenSource>> = None;
        for (key, value) in dict.iter() {
            let key: String = key.extract()?;
            if key == "oauth_cb" {
                if !value.is_callable() {
                    return Err(PyTypeError::new_err("config 'oauth_cb' must be callable"));
                }
                token_source = Some(std::sync::Arc::new(PyTokenSource(value.unbind())));
                continue;
            }
            let value: String = value.extract().map_err(|_| {
                // The value may be a secret: name the key and the type only.
                PyTypeError::new_err(format!(
                    "config '{key}' must be a string, got {}",
                    value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?;
            properties.push((key, value));
        }
        Ok(ClientSettings::new(properties, token_source))
    }
}

/// An application's OAUTHBEARER token callback.
struct PyTokenSource(Py<PyAny>);

impl TokenSource for PyTokenSource {
    fn token(&self, oauthbearer_config: Option<&str>) -> Result<OAuthToken, String> {
        Python::try_attach(|py| {
            let out = self
                .0
                .call1(py, (oauthbearer_config.unwrap_or(""),))
                .map_err(|e| format!("oauth_cb raised {e}"))?;
            parse_token(out.bind(py)).map_err(|e| format!("oauth_cb returned {e}"))
        })
        .unwrap_or_else(|| Err("the Python interpreter is shutting down".to_owned()))
    }
}

fn parse_token(out: &Bound<'_, PyAny>) -> Result<OAuthToken, String> {
    let shape = "expected (token, expiry_epoch_seconds[, principal[, extensions]])";
    let tuple = out
        .cast::<PyTuple>()
        .map_err(|_| format!("a non-tuple: {shape}"))?;
    if !(2..=4).contains(&tuple.len()) {
        return Err(format!("a tuple of {} items: {shape}", tuple.len()));
    }
    let item = |i: usize| tuple.get_item(i).map_err(|e| e.to_string());
    let token: String = item(0)?
        .extract()
        .map_err(|_| format!("a token that is not a string: {shape}"))?;
    let expiry: f64 = item(1)?
        .extract()
        .map_err(|_| format!("an expiry that is not a number: {shape}"))?;
    let principal: Option<String> = match tuple.len() {
        2 => None,
        _ => item(2)?
            .extract()
            .map_err(|_| format!("a principal that is not a string: {shape}"))?,
    };
    let extensions: Vec<(String, String)> = match tuple.len() {
        4 => item(3)?
            .extract::<std::collections::HashMap<String, String>>()
            .map_err(|_| format!("extensions that are not a dict of strings: {shape}"))?
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    let principal = principal
        .filter(|p| !p.is_empty())
        .or_else(|| jwt_subject(&token))
        .unwrap_or_else(|| "kafka-ml".to_owned());
    Ok(OAuthToken {
        token,
        principal,
        expires_at_ms: (expiry * 1000.0) as i64,
        extensions,
    })
}

/// The `sub` claim of a JWT, librdkafka's principal name when the callback gives none.
fn jwt_subject(token: &str) -> Option<String> {
    use simd_json::prelude::*;
    let payload = token.split('.').nth(1)?;
    let mut claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims = simd_json::to_borrowed_value(&mut claims).ok()?;
    claims.get_str("sub").map(str::to_owned)
}

/// Log records of the core and of librdkafka, on their way to Python's `logging`.
struct QueuedRecord {
    level: log::Level,
    target: String,
    message: String,
}

/// A `log` logger that hands records to one forwarding thread, which passes them to
/// Python's `logging` (through pyo3-log: logger `kafka_ml.librdkafka`, `kafka_ml.dataset`, ...).
///
/// Records come from librdkafka's and the core's own threads, some of which the application
/// waits for (joins) while holding the GIL. Taking the GIL on such a thread to log could
/// deadlock, so a record is only queued there; when the queue is full, records are dropped
/// rather than block.
struct QueuedLogger;

/// The queue of this process's forwarding thread. A forked child (a DataLoader worker) gets a
/// queue and a thread of its own (`after_fork_in_child`): it inherits no threads, and its copy of
/// the parent's queue may hold a lock that a parent thread held at the fork.
static LOG_QUEUE: ArcSwapOption<SyncSender<QueuedRecord>> = ArcSwapOption::const_empty();

impl log::Log for QueuedLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // The library's own records (librdkafka's lines come as `kafka_ml::librdkafka`).
        // rust-rdkafka's own records are left out: they are per-message traces, and one error
        // it logs when a consumer it drops was already closed, which kafka-ml always does first.
        metadata.target().starts_with("kafka_ml") && metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(queue) = LOG_QUEUE.load_full() else {
            return;
        };
        let queued = QueuedRecord {
            level: record.level(),
            target: record.target().to_owned(),
            message: crate::client::redact(&record.args().to_string()).into_owned(),
        };
        if let Err(TrySendError::Full(_)) = queue.try_send(queued) {
            // Dropped: a log flood must not stall the consumer or the producer.
        }
    }

    fn flush(&self) {}
}

/// Starts this process's forwarding thread and points the logger at its queue.
fn start_log_thread(py: Python<'_>) -> PyResult<()> {
    let python_logger =
        pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers)?.filter(log::LevelFilter::Trace);
    let (tx, rx) = sync_channel::<QueuedRecord>(10_000);
    std::thread::Builder::new()
        .name("kafka-ml-log".into())
        .spawn(move || {
            use log::Log;
            for r in rx {
                // Not while the interpreter shuts down (attaching then would panic): records
                // of clients dropped at exit are let go.
                let _ = Python::try_attach(|_py| {
                    python_logger.log(
                        &log::Record::builder()
                            .level(r.level)
                            .target(&r.target)
                            .args(format_args!("{}", r.message))
                            .build(),
                    )
                });
            }
        })
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the log thread: {e}"))
        })?;
    let previous = LOG_QUEUE.swap(Some(std::sync::Arc::new(tx)));
    // In a forked child the previous queue is the parent's: dropping its sender would take the
    // channel's lock, which a parent thread may have held at the fork. It is left as it is.
    std::mem::forget(previous);
    Ok(())
}

/// Installs the log bridge (once per process, when the module is imported), and the hook that
/// restarts it in a forked child.
pub fn install_logging(py: Python<'_>) -> PyResult<()> {
    start_log_thread(py)?;
    if log::set_boxed_logger(Box::new(QueuedLogger)).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", wrap_pyfunction!(after_fork_in_child, py)?)?;
    py.import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    Ok(())
}

/// Runs in a child forked by Python (`os.fork`, multiprocessing's fork start method), before
/// any other thread exists there: gives it its own log thread.
#[pyfunction]
fn after_fork_in_child(py: Python<'_>) -> PyResult<()> {
    start_log_thread(py)
}

/// Whether `key` is a consumer-only librdkafka property, one that a producer derived from a
/// consumer's configuration leaves out (`kafka_ml.config.shared_client_config`).
#[pyfunction]
fn is_consumer_only_property(key: &str) -> bool {
    crate::client::is_consumer_only_property(key)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("librdkafka_features", crate::client::builtin_features())?;
    m.add("secret_properties", crate::client::SECRET_PROPERTIES.to_vec())?;
    m.add_function(wrap_pyfunction!(is_consumer_only_property, m)?)?;
    // The header names kafka-ml writes (`kafka_ml.headers`).
    m.add("HEADER_ERROR", crate::headers::ERROR)?;
    m.add("HEADER_SOURCE_TOPIC", crate::headers::SOURCE_TOPIC)?;
    m.add("HEADER_SOURCE_PARTITION", crate::headers::SOURCE_PARTITION)?;
    m.add("HEADER_SOURCE_OFFSET", crate::headers::SOURCE_OFFSET)?;
    m.add("HEADER_MODEL_VERSION", crate::headers::MODEL_VERSION)?;
    install_logging(m.py())
}
