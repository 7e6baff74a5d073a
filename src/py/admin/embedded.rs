//! Bindings of the embedded cluster (`admin::embedded`): librdkafka's mock cluster for demos.

use crate::admin::embedded;
use crate::py::errors::IntoPyResult;
use pyo3::prelude::*;

/// librdkafka's in-process mock cluster, on a loopback port, alive as long as this object.
// unsendable: the mock cluster handle is owned by the thread that created it.
#[pyclass(module = "kafka_ml._native", unsendable)]
pub struct EmbeddedCluster {
    inner: Option<embedded::EmbeddedCluster>,
}

impl EmbeddedCluster {
    fn get(&self) -> PyResult<&embedded::EmbeddedCluster> {
        self.inner
            .as_ref()
            .ok_or_else(|| crate::py::errors::to_pyerr(crate::error::Error::Closed("EmbeddedCluster")))
    }
}

#[pymethods]
impl EmbeddedCluster {
    #[new]
    #[pyo3(signature = (brokers = 1))]
    fn new(brokers: i32) -> PyResult<Self> {
        Ok(EmbeddedCluster {
            inner: Some(embedded::EmbeddedCluster::new(brokers).py_err()?),
        })
    }

    #[getter]
    fn bootstrap_servers(&self) -> PyResult<String> {
        Ok(self.get()?.bootstrap_servers())
    }

    #[pyo3(signature = (name, partitions = 1, replication_factor = 1))]
    fn create_topic(&self, name: &str, partitions: i32, replication_factor: i32) -> PyResult<()> {
        self.get()?
            .create_topic(name, partitions, replication_factor)
            .py_err()
    }

    fn close(&mut self) {
        self.inner = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, _exc_type: Py<PyAny>, _exc: Py<PyAny>, _tb: Py<PyAny>) {
        self.close();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EmbeddedCluster>()
}
