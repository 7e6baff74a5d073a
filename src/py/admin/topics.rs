//! Bindings of cluster administration: topic creation.

use crate::admin::{self, TopicCreation, TopicSpec};
use crate::client::ClientSettings;
use crate::error::Error;
use crate::py::errors::IntoPyResult;
use crate::py::{blocking, seconds};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// Creates topic `name` with topic-level `topic_config`; `True` if it was created, `False` if it
/// already existed (left unchanged). Waits at most `timeout` seconds, interruptibly.
#[pyfunction]
#[pyo3(signature = (config, name, partitions=1, replication=1, topic_config=None, timeout=30.0))]
fn create_topic(
    py: Python<'_>,
    config: ClientSettings,
    name: String,
    partitions: i32,
    replication: i32,
    topic_config: Option<HashMap<String, String>>,
    timeout: f64,
) -> PyResult<bool> {
    let timeout = seconds("timeout", timeout)?;
    let spec = TopicSpec {
        name: name.clone(),
        partitions,
        replication,
        config: topic_config.unwrap_or_default().into_iter().collect(),
    };
    let mut pending = Box::pin(admin::create_topic(&config, spec, timeout).py_err()?);
    let runtime = crate::py::runtime()?;
    // Polls the admin request in slices so Ctrl-C is honoured; one extra second lets the
    // cluster's own timeout answer first.
    let outcome = blocking(py, Some(timeout + Duration::from_secs(1)), |slice| {
        runtime.block_on(async { tokio::time::timeout(slice, pending.as_mut()).await.ok() })
    })?;
    let created = outcome
        .unwrap_or_else(|| {
            Err(Error::Timeout {
                what: format!("creating topic '{name}' took longer than {timeout:?}"),
                kafka: None,
            })
        })
        .py_err()?;
    Ok(created == TopicCreation::Created)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(create_topic, m)?)
}
