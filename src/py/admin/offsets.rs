//! Bindings of `admin::offsets`: commit a checkpoint's offsets to a group, read them, partitions' watermarks.

use crate::admin::offsets;
use crate::client::ClientSettings;
use crate::error::Error;
use crate::py::errors::{to_pyerr, IntoPyResult};
use crate::py::{blocking, blocking_call, seconds};
use pyo3::prelude::*;
use std::collections::HashMap;

/// Commits `{(topic, partition): next_offset}` for the config's `group.id` (synchronous).
#[pyfunction]
#[pyo3(signature = (config, offsets, timeout = 30.0))]
fn commit_offsets(
    py: Python<'_>,
    config: ClientSettings,
    offsets: HashMap<(String, i32), i64>,
    timeout: f64,
) -> PyResult<()> {
    let offsets: Vec<_> = offsets.into_iter().collect();
    let wait_for = seconds("timeout", timeout)?;
    // The commit itself is synchronous inside librdkafka; run it off the GIL on its own thread
    // so Ctrl-C and the timeout are honoured through the one blocking helper.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(offsets::commit_offsets(&config, &offsets, wait_for));
    });
    let wait = move |slice| rx.recv_timeout(slice).ok();
    match blocking(py, Some(wait_for), wait)? {
        Some(result) => result.py_err(),
        None => Err(to_pyerr(Error::Timeout {
            what: format!("committing offsets did not finish within {timeout} s"),
            kafka: None,
        })),
    }
}

/// The config's group's committed offsets of `partitions` (`None` where nothing is committed).
#[pyfunction]
#[pyo3(signature = (config, partitions, timeout = 30.0))]
fn committed_offsets(
    py: Python<'_>,
    config: ClientSettings,
    partitions: Vec<(String, i32)>,
    timeout: f64,
) -> PyResult<HashMap<(String, i32), Option<i64>>> {
    let timeout = seconds("timeout", timeout)?;
    let out = blocking_call(py, move || {
        offsets::committed_offsets(&config, &partitions, timeout)
    })?
    .py_err()?;
    Ok(out.into_iter().collect())
}

/// `{(topic, partition): (low, high)}`: the first offset and the next offset to be written.
#[pyfunction]
#[pyo3(signature = (config, partitions, timeout = 10.0))]
fn watermarks(
    py: Python<'_>,
    config: ClientSettings,
    partitions: Vec<(String, i32)>,
    timeout: f64,
) -> PyResult<HashMap<(String, i32), (i64, i64)>> {
    let timeout = seconds("timeout", timeout)?;
    let out = blocking_call(py, move || offsets::watermarks(&config, &partitions, timeout))?.py_err()?;
    Ok(out.into_iter().collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(commit_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(committed_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(watermarks, m)?)
}
