//! Bindings of `admin`: topics, offsets outside a reading consumer, the embedded cluster.

mod embedded;
mod offsets;
mod topics;

use pyo3::prelude::*;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    embedded::register(m)?;
    offsets::register(m)?;
    topics::register(m)
}
