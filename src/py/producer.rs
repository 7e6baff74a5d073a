//! Bindings of the delivery-tracked producer.

use super::blocking;
use super::dataset::BatchReader;
use super::errors::to_pyerr;
use super::errors::IntoPyResult;
use crate::encode::{self, EncodeFormat};
use crate::error::Error;
use crate::producer::{self, OutgoingMessage, RowBatch};
use crate::schema::ColumnSpec;
use arrow_array::Array;
use arrow_array::RecordBatchReader as _;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3_arrow::{PyArray, PyRecordBatchReader};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long `send`/`produce` wait for room in librdkafka's queue before failing.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// A librdkafka producer; every message is accounted delivered or failed.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct Producer {
    inner: Arc<producer::Producer>,
}

#[pymethods]
impl Producer {
    #[new]
    fn new(config: HashMap<String, String>) -> PyResult<Self> {
        let config: Vec<(String, String)> = config.into_iter().collect();
        Ok(Producer {
            inner: Arc::new(producer::Producer::new(&config).py_err()?),
        })
    }

    /// Queues one message.
    #[pyo3(signature = (topic, value=None, key=None, partition=None, headers=None, timestamp=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature
    fn produce(
        &self,
        py: Python<'_>,
        topic: &str,
        value: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
        partition: Option<i32>,
        headers: Option<Vec<(String, Option<Vec<u8>>)>>,
        timestamp: Option<i64>,
    ) -> PyResult<()> {
        let headers = headers.unwrap_or_default();
        let inner = self.inner.clone();
        py.detach(|| {
            let msg = OutgoingMessage {
                topic,
                key: key.as_deref(),
                value: value.as_deref(),
                partition,
                timestamp,
                headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect(),
            };
            inner.send(&msg, ENQUEUE_TIMEOUT)
        })
        .py_err()
    }

    /// Queues one message per row of a C-contiguous buffer (`row_bytes` bytes each): the
    /// `tensor` format. The GIL is released while rows are queued.
    #[pyo3(signature = (topic, rows, row_bytes, partition=None))]
    fn send_rows(
        &self,
        py: Python<'_>,
        topic: &str,
        rows: &Bound<'_, PyAny>,
        row_bytes: usize,
        partition: Option<i32>,
    ) -> PyResult<usize> {
        let buffer = PyBuffer::<u8>::get(rows)?;
        if !buffer.is_c_contiguous() {
            return Err(super::errors::to_pyerr(Error::Config(
                "send_rows needs a C-contiguous buffer".into(),
            )));
        }
        let len = buffer.len_bytes();
        if row_bytes == 0 || len % row_bytes != 0 {
            return Err(super::errors::to_pyerr(Error::Config(format!(
                "buffer of {len} bytes is not a whole number of {row_bytes}-byte rows"
            ))));
        }
        // SAFETY: the buffer is held (and so pinned) for the duration of this call, and its
        // exporter keeps it alive; it is only read.
        let data = unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, len) };
        let inner = self.inner.clone();
        py.detach(|| {
            for row in data.chunks_exact(row_bytes) {
                let msg = OutgoingMessage {
                    topic,
                    key: None,
                    value: Some(row),
                    partition,
                    timestamp: None,
                    headers: vec![],
                };
                inner.send(&msg, ENQUEUE_TIMEOUT)?;
            }
            Ok::<_, Error>(len / row_bytes)
        })
        .py_err()
    }

    /// Encodes every row of an Arrow stream (anything with `__arrow_c_stream__`) in `format`
    /// and queues one message per row. Everything is validated and encoded before the first
    /// message is queued, so bad data sends nothing. Returns the number of rows queued.
    #[pyo3(signature = (
        topic, data, format, *, columns=None, avro_schema=None, schema_id=None, key_column=None,
        keys=None, partition=None, headers=None, timestamp=None, timeout=30.0
    ))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature
    fn send_arrow(
        &self,
        py: Python<'_>,
        topic: &str,
        data: PyRecordBatchReader,
        format: &str,
        columns: Option<Vec<(String, String)>>,
        avro_schema: Option<String>,
        schema_id: Option<u32>,
        key_column: Option<String>,
        keys: Option<PyArray>,
        partition: Option<i32>,
        headers: Option<Vec<(String, Option<Vec<u8>>)>>,
        timestamp: Option<i64>,
        timeout: f64,
    ) -> PyResult<usize> {
        let columns = columns
            .map(|cs| {
                cs.iter()
                    .map(|(n, t)| ColumnSpec::parse(n, t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|e| to_pyerr(Error::Config(e)))?;
        let format = match format {
            "tensor" => EncodeFormat::Tensor,
            "json" => EncodeFormat::Json,
            "raw" => EncodeFormat::Raw,
            "avro" => {
                let text = avro_schema
                    .ok_or_else(|| to_pyerr(Error::Config("format='avro' needs avro_schema".into())))?;
                let schema = apache_avro::Schema::parse_str(&text)
                    .map_err(|e| to_pyerr(Error::Config(format!("invalid Avro schema: {e}"))))?;
                EncodeFormat::Avro { schema, schema_id }
            }
            other => {
                return Err(to_pyerr(Error::Config(format!(
                    "unknown format '{other}' (expected tensor, json, avro or raw)"
                ))))
            }
        };
        let reader = data.into_reader()?;
        let keys = keys.map(|k| k.into_inner().0);
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        let headers = headers.unwrap_or_default();
        let inner = self.inner.clone();
        py.detach(|| {
            // Validate and encode everything first: a bad row anywhere sends nothing. The input
            // is one table (row numbers in errors count from its start).
            let schema = reader.schema();
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Encode(format!("cannot read the input: {e}")))?;
            let batch = match batches.len() {
                1 => batches.into_iter().next().expect("one batch"),
                _ => arrow_select::concat::concat_batches(&schema, &batches)
                    .map_err(|e| Error::Encode(e.to_string()))?,
            };
            let batch = match &columns {
                Some(cs) => encode::conform(&batch, cs).map_err(Error::Encode)?,
                None => batch,
            };
            let values = encode::encode(&batch, &format).map_err(Error::Encode)?;
            inner.check_sizes(&values)?;
            let key_rows = match (&key_column, &keys) {
                (Some(name), _) => Some(encode::keys_from_column(&batch, name).map_err(Error::Encode)?),
                (None, Some(array)) => {
                    if array.len() != values.len() {
                        return Err(Error::Encode(format!(
                            "{} keys for {} rows",
                            array.len(),
                            values.len()
                        )));
                    }
                    let one = arrow_array::RecordBatch::try_from_iter([("key", array.clone())])
                        .map_err(|e| Error::Encode(e.to_string()))?;
                    Some(encode::keys_from_column(&one, "key").map_err(Error::Encode)?)
                }
                (None, None) => None,
            };
            inner.check_topic(topic, timeout)?;
            let rows = RowBatch {
                topic,
                values: &values,
                keys: key_rows.as_ref(),
                partition,
                timestamp,
                headers: &headers,
            };
            inner.send_rows(&rows, ENQUEUE_TIMEOUT)
        })
        .py_err()
    }

    /// Waits for every queued message; raises if any failed or some are undelivered in time.
    #[pyo3(signature = (timeout=30.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let inner = self.inner.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        // Flush in slices so Ctrl-C is honoured; the last slice reports the outcome.
        let out = blocking(py, None, move |slice| {
            let now = std::time::Instant::now();
            let last = now + slice >= deadline;
            match inner.flush(if last {
                deadline.saturating_duration_since(now)
            } else {
                slice
            }) {
                Err(Error::Timeout { .. }) if !last => None,
                other => Some(other),
            }
        })?;
        out.expect("waits until the deadline").py_err()
    }

    #[pyo3(signature = (timeout=30.0))]
    fn init_transactions(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(|| inner.init_transactions(seconds(timeout))).py_err()
    }

    fn begin_transaction(&self) -> PyResult<()> {
        self.inner.begin_transaction().py_err()
    }

    #[pyo3(signature = (timeout=30.0))]
    fn commit_transaction(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(|| inner.commit_transaction(seconds(timeout))).py_err()
    }

    #[pyo3(signature = (timeout=30.0))]
    fn abort_transaction(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(|| inner.abort_transaction(seconds(timeout))).py_err()
    }

    /// Commits, inside the open transaction, the offsets of everything `reader` handed out,
    /// with its consumer group membership (so a fenced, stale member cannot commit).
    #[pyo3(signature = (reader, timeout=30.0))]
    fn send_offsets_to_transaction(
        &self,
        py: Python<'_>,
        reader: &BatchReader,
        timeout: f64,
    ) -> PyResult<()> {
        let (offsets, group) = reader.with_reader(|r| (r.positions(), r.group_metadata()));
        let group = group.ok_or_else(|| {
            to_pyerr(Error::Config(
                "the dataset has no consumer group: set 'group.id' in its config".into(),
            ))
        })?;
        let inner = self.inner.clone();
        py.detach(|| inner.send_offsets_to_transaction(&offsets, &group, seconds(timeout)))
            .py_err()
    }

    #[getter]
    fn delivered(&self) -> u64 {
        self.inner.delivered()
    }

    #[getter]
    fn failed(&self) -> u64 {
        self.inner.failed()
    }

    #[getter]
    fn sent(&self) -> u64 {
        self.inner.sent()
    }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Producer>()
}
