//! Python bindings of the core: argument conversion, GIL release and error mapping only.

mod admin;
mod arrow_numpy;
mod client;
mod dataset;
mod embedded;
mod errors;
mod offsets;
mod producer;
mod protobuf;
mod registry;

use pyo3::prelude::*;
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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("librdkafka_version", rdkafka::util::get_rdkafka_version().1)?;
    dataset::register(m)?;
    producer::register(m)?;
    embedded::register(m)?;
    offsets::register(m)?;
    admin::register(m)?;
    client::register(m)?;
    registry::register(m)?;
    protobuf::register(m)?;
    Ok(())
}
