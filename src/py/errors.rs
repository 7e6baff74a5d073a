//! The one place where core errors become Python exceptions. The classes live in
//! `kafka_ml/exceptions.py` (a typed, documented tree rooted at `KafkaMLError`); each core error
//! variant maps to one class, with librdkafka's code/name/retriable/fatal attached.

use crate::error::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

static EXCEPTIONS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn exception(py: Python<'_>, class: &str, message: String, kwargs: &Bound<'_, PyDict>) -> PyErr {
    let module = match EXCEPTIONS.get_or_try_init(py, || py.import("kafka_ml.exceptions").map(Bound::unbind))
    {
        Ok(m) => m.bind(py),
        Err(e) => return e,
    };
    match module
        .getattr(class)
        .and_then(|cls| cls.call((message,), Some(kwargs)))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => PyRuntimeError::new_err(format!("cannot raise kafka_ml.exceptions.{class}: {e}")),
    }
}

pub fn to_pyerr(err: Error) -> PyErr {
    Python::attach(|py| {
        let kwargs = PyDict::new(py);
        if let Some(k) = err.kafka_code() {
            let _ = kwargs.set_item("code", k.code);
            let _ = kwargs.set_item("name", &k.name);
            let _ = kwargs.set_item("retriable", k.retriable);
            let _ = kwargs.set_item("fatal", k.fatal);
        }
        let class = match &err {
            Error::Config(_) => "ConfigError",
            Error::Decode { position, reason } => {
                let _ = kwargs.set_item("topic", &position.topic);
                let _ = kwargs.set_item("partition", position.partition);
                let _ = kwargs.set_item("offset", position.offset);
                let _ = kwargs.set_item("reason", reason);
                "DecodeError"
            }
            Error::Encode(_) => "EncodeError",
            Error::UnknownTopic { .. } => "UnknownTopicError",
            Error::Timeout { .. } => "KafkaTimeoutError",
            Error::Delivery { .. } => "DeliveryError",
            Error::Kafka { .. } => "KafkaError",
            Error::Closed(_) => "ClosedError",
            Error::Forked { .. } | Error::ForkedWithTls { .. } => "ForkedProcessError",
            Error::Authentication { .. } => "AuthenticationError",
            Error::Ssl { .. } => "SSLError",
            Error::Registry {
                status, error_code, ..
            } => {
                let _ = kwargs.set_item("status", status);
                let _ = kwargs.set_item("error_code", error_code);
                "SchemaRegistryError"
            }
            Error::Authorization {
                resource, operation, ..
            } => {
                let _ = kwargs.set_item("resource", resource);
                let _ = kwargs.set_item("operation", operation);
                "AuthorizationError"
            }
        };
        // The last line of defence for secrets: no message leaves the core unscrubbed.
        let message = crate::client::redact(&err.to_string()).into_owned();
        exception(py, class, message, &kwargs)
    })
}

/// `?`-friendly conversion for binding code.
pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
