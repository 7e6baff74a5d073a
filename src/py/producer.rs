//! Bindings of the delivery-tracked producer: sync and async sends, delivery reports,
//! transactions.

use super::consumer::BatchReader;
use super::errors::{to_pyerr, IntoPyResult};
use super::{blocking, blocking_call, seconds, Native};
use crate::client::ClientSettings;
use crate::error::Error;
use crate::format::columns::ColumnSpec;
use crate::format::{EncodeFormat, EncodedRows};
use crate::producer::{self, OutgoingMessage, RowBatch, SendTracker, TableSend, ENQUEUE_TIMEOUT};
use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3_arrow::{PyArray, PyRecordBatchReader};
use std::sync::Arc;

/// The delivery outcome of one send: counts as reports arrive, failed rows, completion.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct SendReport {
    tracker: Arc<SendTracker>,
    /// Its producer (a handle that `Producer.close()` empties): a failed login ends a wait on
    /// the report at once.
    producer: Native<producer::Producer>,
}

impl SendReport {
    /// What counts this report's deliveries (waited on together with other events).
    pub(crate) fn tracker(&self) -> Arc<SendTracker> {
        self.tracker.clone()
    }

    fn new(tracker: Arc<SendTracker>, producer: &Native<producer::Producer>) -> Self {
        SendReport {
            tracker,
            producer: producer.share(),
        }
    }

    /// Waits for every report (slices of `timeout`, serving Ctrl-C), ended early by a failed
    /// login. After the producer's `close()` every report is in (delivered, or failed by the
    /// purge), so there is no login left to check.
    fn wait_for_reports(&self, py: Python<'_>, timeout: Option<std::time::Duration>) -> PyResult<Option<()>> {
        let (tracker, producer) = (self.tracker.clone(), self.producer.open("producer")?);
        blocking(py, timeout, move |slice| {
            if let Some(Err(e)) = producer.as_ref().map(|p| p.check_login()) {
                return Some(Err(e));
            }
            tracker.wait(slice).then_some(Ok(()))
        })?
        .transpose()
        .py_err()
    }
}

#[pymethods]
impl SendReport {
    #[getter]
    fn rows(&self) -> usize {
        self.tracker.rows()
    }

    #[getter]
    fn delivered(&self) -> u64 {
        self.tracker.delivered()
    }

    #[getter]
    fn failed(&self) -> u64 {
        self.tracker.failed()
    }

    /// True once every row was reported delivered or failed.
    #[getter]
    fn done(&self) -> bool {
        self.tracker.is_done()
    }

    /// `[(row, reason)]` of the first failed rows (up to 100).
    #[getter]
    fn failures(&self) -> Vec<(usize, String)> {
        self.tracker.failures()
    }

    /// Waits up to `timeout` seconds (GIL released, Ctrl-C served) for every report; returns
    /// whether they are all in. Unlike `wait`, raises nothing about failed rows.
    fn join(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = seconds("timeout", timeout)?;
        Ok(self.wait_for_reports(py, Some(timeout))?.is_some())
    }

    /// Waits for every report (serving Ctrl-C); raises `DeliveryError` naming the failed rows,
    /// or `KafkaTimeoutError` if reports are still missing after `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn wait(slf: Py<Self>, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<Self>> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let done = slf.get().wait_for_reports(py, timeout)?;
        let tracker = &slf.get().tracker;
        if done.is_none() {
            let missing = tracker.rows() as u64 - tracker.delivered() - tracker.failed();
            return Err(to_pyerr(Error::Timeout {
                what: format!("{missing} of {} rows not delivered yet", tracker.rows()),
                kafka: None,
            }));
        }
        tracker.outcome().py_err()?;
        Ok(slf)
    }

    fn __repr__(&self) -> String {
        format!(
            "SendReport(rows={}, delivered={}, failed={}, done={})",
            self.rows(),
            self.delivered(),
            self.failed(),
            self.done()
        )
    }
}

/// A checked table send, run once by `send_prepared` or `send_prepared_async`.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct PreparedSend {
    send: std::sync::Mutex<Option<TableSend>>,
}

impl PreparedSend {
    fn take(&self) -> PyResult<TableSend> {
        let send = self.send.lock().unwrap_or_else(|p| p.into_inner()).take();
        send.ok_or_else(|| to_pyerr(Error::Config("this send was run already".into())))
    }
}

/// A send's Protobuf schema arguments (see `super::protobuf::proto_source`).
struct ProtoArgs {
    proto_schema: Option<String>,
    proto_file: Option<std::path::PathBuf>,
    descriptor_set: Option<Vec<u8>>,
    message: Option<String>,
}

/// A librdkafka producer; every message is accounted delivered or failed.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct Producer {
    inner: Native<producer::Producer>,
    /// `(sent, delivered, failed)` when `close()` released the producer: still readable.
    final_counts: std::sync::OnceLock<(u64, u64, u64)>,
}

impl Producer {
    fn producer(&self) -> PyResult<Arc<producer::Producer>> {
        self.inner.get("producer")
    }

    /// `(sent, delivered, failed)`, also after `close()`.
    fn counts(&self) -> PyResult<(u64, u64, u64)> {
        match self.final_counts.get() {
            Some(counts) => Ok(*counts),
            None => {
                let p = self.producer()?;
                Ok((p.sent(), p.delivered(), p.failed()))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn table_send(
        topic: &str,
        data: PyRecordBatchReader,
        format: &str,
        columns: Option<Vec<(String, String)>>,
        avro_schema: Option<String>,
        schema_id: Option<u32>,
        proto: ProtoArgs,
        key_column: Option<String>,
        keys: Option<PyArray>,
        partition: Option<i32>,
        headers: Option<Vec<(String, Option<Vec<u8>>)>>,
        row_headers: Option<Vec<(String, PyArray)>>,
        timestamp: Option<i64>,
        timeout: f64,
    ) -> PyResult<TableSend> {
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
            "json_schema" => EncodeFormat::JsonSchema {
                schema_id: schema_id.ok_or_else(|| {
                    to_pyerr(Error::Config(
                        "format='json_schema' needs a schema_registry (or the schema's registry id)".into(),
                    ))
                })?,
            },
            "avro" => {
                let text = avro_schema
                    .ok_or_else(|| to_pyerr(Error::Config("format='avro' needs avro_schema".into())))?;
                let schema = apache_avro::Schema::parse_str(&text)
                    .map_err(|e| to_pyerr(Error::Config(format!("invalid Avro schema: {e}"))))?;
                EncodeFormat::Avro { schema, schema_id }
            }
            "protobuf" => {
                let source = super::protobuf::proto_source(
                    proto.proto_schema,
                    proto.proto_file,
                    proto.descriptor_set,
                )?
                .ok_or_else(|| {
                    to_pyerr(Error::Config(
                        "format='protobuf' needs proto_schema, proto_file or descriptor_set".into(),
                    ))
                })?;
                let message = crate::format::protobuf::load_message(&source, proto.message.as_deref())
                    .map_err(|e| to_pyerr(Error::Config(e)))?;
                EncodeFormat::Protobuf { message, schema_id }
            }
            other => {
                return Err(to_pyerr(Error::Config(format!(
                    "unknown format '{other}' (expected tensor, json, json_schema, avro, protobuf or raw)"
                ))))
            }
        };
        Ok(TableSend {
            topic: topic.to_string(),
            reader: data.into_reader()?,
            format,
            columns,
            key_column,
            keys: keys.map(|k| k.into_inner().0),
            partition,
            headers: headers.unwrap_or_default(),
            row_headers: row_headers
                .unwrap_or_default()
                .into_iter()
                .map(|(name, array)| (name, array.into_inner().0))
                .collect(),
            timestamp,
            timeout: seconds("timeout", timeout)?,
        })
    }
}

#[pymethods]
impl Producer {
    #[new]
    fn new(config: ClientSettings) -> PyResult<Self> {
        Ok(Producer {
            inner: Native::new(Arc::new(producer::Producer::new(&config).py_err()?)),
            final_counts: std::sync::OnceLock::new(),
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
    ) -> PyResult<SendReport> {
        let headers = headers.unwrap_or_default();
        let inner = self.producer()?;
        let msg = OutgoingMessage {
            topic,
            key: key.as_deref(),
            value: value.as_deref(),
            partition,
            timestamp,
            headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect(),
        };
        // Usually queued at once; while librdkafka's queue is full, retried in slices so Ctrl-C
        // is served.
        let deadline = std::time::Instant::now() + ENQUEUE_TIMEOUT;
        let sent = blocking(py, None, |slice| match inner.send_one(&msg, slice) {
            Err(e) if is_queue_full(&e) && std::time::Instant::now() < deadline => None,
            other => Some(other),
        })?;
        let tracker = sent.expect("waits until queued or failed").py_err()?;
        Ok(SendReport::new(tracker, &self.inner))
    }

    /// Queues one message per row of a C-contiguous buffer (`row_bytes` bytes each): the
    /// `tensor` format. The GIL is released while rows are queued.
    #[pyo3(signature = (topic, rows, row_bytes, partition=None))]
    fn send_rows(
        &self,
        py: Python<'_>,
        topic: &str,
        rows: &Bound<'_, PyArray1<u8>>,
        row_bytes: usize,
        partition: Option<i32>,
    ) -> PyResult<SendReport> {
        if !rows.is_c_contiguous() {
            return Err(to_pyerr(Error::Config(
                "send_rows needs a C-contiguous array".into(),
            )));
        }
        let len = rows.len();
        if row_bytes == 0 || len % row_bytes != 0 {
            return Err(to_pyerr(Error::Config(format!(
                "array of {len} bytes is not a whole number of {row_bytes}-byte rows"
            ))));
        }
        // The rows are read in place, from an Arrow buffer that holds the NumPy array.
        let values = EncodedRows::fixed_width(held_bytes(rows), row_bytes);
        let inner = self.producer()?;
        let topic = topic.to_owned();
        let sender = inner.clone();
        let tracker = blocking_call(py, move || {
            sender.check_topic(&topic, ENQUEUE_TIMEOUT)?;
            sender.check_sizes(&values)?;
            let batch = RowBatch {
                topic: &topic,
                values: &values,
                keys: None,
                partition,
                timestamp: None,
                headers: &[],
                row_headers: &[],
            };
            sender.send_rows(&batch, ENQUEUE_TIMEOUT)
        })?
        .py_err()?;
        Ok(SendReport::new(tracker, &self.inner))
    }

    /// Checks the arguments of a table send (format, schema, keys) and takes the Arrow stream
    /// (anything with `__arrow_c_stream__`); `send_prepared` or `send_prepared_async` runs it.
    #[pyo3(signature = (
        topic, data, format, *, columns=None, avro_schema=None, schema_id=None, proto_schema=None,
        proto_file=None, descriptor_set=None, message=None, key_column=None, keys=None, partition=None,
        headers=None, row_headers=None, timestamp=None, timeout=30.0
    ))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature
    fn prepare_send(
        &self,
        topic: &str,
        data: PyRecordBatchReader,
        format: &str,
        columns: Option<Vec<(String, String)>>,
        avro_schema: Option<String>,
        schema_id: Option<u32>,
        proto_schema: Option<String>,
        proto_file: Option<std::path::PathBuf>,
        descriptor_set: Option<Vec<u8>>,
        message: Option<String>,
        key_column: Option<String>,
        keys: Option<PyArray>,
        partition: Option<i32>,
        headers: Option<Vec<(String, Option<Vec<u8>>)>>,
        row_headers: Option<Vec<(String, PyArray)>>,
        timestamp: Option<i64>,
        timeout: f64,
    ) -> PyResult<PreparedSend> {
        let proto = ProtoArgs {
            proto_schema,
            proto_file,
            descriptor_set,
            message,
        };
        let send = Self::table_send(
            topic,
            data,
            format,
            columns,
            avro_schema,
            schema_id,
            proto,
            key_column,
            keys,
            partition,
            headers,
            row_headers,
            timestamp,
            timeout,
        )?;
        Ok(PreparedSend {
            send: std::sync::Mutex::new(Some(send)),
        })
    }

    /// Encodes every row of a prepared send and queues one message per row; see
    /// `kafka_ml.Producer.send`.
    /// `rows`: the send's row count where the caller knows it. A send that cannot wait (every
    /// row fits librdkafka's queue now, no topic look-up) then runs on this thread with the GIL
    /// released. Others run on a helper thread (`blocking_call`) so that Ctrl-C ends a long
    /// wait for room at once; but that is a thread started and two hand-overs per call, which a
    /// serving loop sending each batch of results paid on its latency path every time.
    #[pyo3(signature = (prepared, rows=None))]
    fn send_prepared(
        &self,
        py: Python<'_>,
        prepared: &PreparedSend,
        rows: Option<usize>,
    ) -> PyResult<SendReport> {
        let send = prepared.take()?;
        let inner = self.producer()?;
        let tracker = if rows.is_some_and(|n| inner.can_queue_without_waiting(&send.topic, n)) {
            py.detach(|| send.run(&inner))
        } else {
            blocking_call(py, move || send.run(&inner))?
        }
        .py_err()?;
        Ok(SendReport::new(tracker, &self.inner))
    }

    /// Like `send_prepared`, as an awaitable that resolves to the `SendReport` once every row is
    /// delivered (or raises `DeliveryError`). Encoding and queueing run on the shared runtime's
    /// blocking pool and the wait is asynchronous: the event loop never blocks, and no thread
    /// is started per call.
    fn send_prepared_async<'py>(
        &self,
        py: Python<'py>,
        prepared: &PreparedSend,
    ) -> PyResult<Bound<'py, PyAny>> {
        let send = prepared.take()?;
        let inner = self.producer()?;
        let producer = inner.clone();
        let handle = self.inner.share();
        super::future_into_py(py, async move {
            let tracker = tokio::task::spawn_blocking(move || send.run(&inner))
                .await
                .map_err(|e| {
                    to_pyerr(Error::Delivery {
                        what: format!("send task failed: {e}"),
                        kafka: None,
                    })
                })?
                .py_err()?;
            // Waits for the reports, looking for a failed login every 100 ms meanwhile.
            loop {
                tokio::select! {
                    () = tracker.finished() => break,
                    () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                        producer.check_login().py_err()?
                    }
                }
            }
            tracker.outcome().py_err()?;
            Ok(SendReport::new(tracker, &handle))
        })
    }

    /// Waits for every queued message; raises if any failed or some are undelivered in time.
    #[pyo3(signature = (timeout=30.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let inner = self.producer()?;
        let deadline = std::time::Instant::now() + seconds("timeout", timeout)?;
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

    /// Releases the librdkafka producer (its connections and threads) for this object and
    /// every `SendReport` of it; anything still queued is purged and reported failed. Later
    /// calls raise `ClosedError`. Idempotent.
    fn close(&self) -> PyResult<()> {
        if let Some(p) = self.inner.open("producer")? {
            let _ = self.final_counts.set((p.sent(), p.delivered(), p.failed()));
        }
        self.inner.close();
        Ok(())
    }

    #[pyo3(signature = (timeout=30.0))]
    fn init_transactions(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds("timeout", timeout)?;
        let inner = self.producer()?;
        blocking_call(py, move || inner.init_transactions(timeout))?.py_err()
    }

    fn begin_transaction(&self) -> PyResult<()> {
        self.producer()?.begin_transaction().py_err()
    }

    #[pyo3(signature = (timeout=30.0))]
    fn commit_transaction(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds("timeout", timeout)?;
        let inner = self.producer()?;
        blocking_call(py, move || inner.commit_transaction(timeout))?.py_err()
    }

    #[pyo3(signature = (timeout=30.0))]
    fn abort_transaction(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds("timeout", timeout)?;
        let inner = self.producer()?;
        blocking_call(py, move || inner.abort_transaction(timeout))?.py_err()
    }

    /// Commits, inside the open transaction, the offsets of everything `reader` handed out (or
    /// exactly `offsets`, `{(topic, partition): next_offset}`, e.g. of the batches whose results
    /// the transaction holds), with its consumer group membership (so a fenced, stale member
    /// cannot commit).
    #[pyo3(signature = (reader, timeout=30.0, offsets=None))]
    fn send_offsets_to_transaction(
        &self,
        py: Python<'_>,
        reader: &BatchReader,
        timeout: f64,
        offsets: Option<std::collections::HashMap<(String, i32), i64>>,
    ) -> PyResult<()> {
        let timeout = seconds("timeout", timeout)?;
        let inner = self.producer()?;
        let (positions, group) = reader.with_reader(py, |r| (r.positions(), r.group_metadata()))?;
        let offsets = offsets.map_or(positions, |o| o.into_iter().collect());
        let group = group.ok_or_else(|| {
            to_pyerr(Error::Config(
                "the dataset has no consumer group: set 'group.id' in its config".into(),
            ))
        })?;
        blocking_call(py, move || {
            inner.send_offsets_to_transaction(&offsets, &group, timeout)
        })?
        .py_err()
    }

    #[getter]
    fn delivered(&self) -> PyResult<u64> {
        Ok(self.counts()?.1)
    }

    #[getter]
    fn failed(&self) -> PyResult<u64> {
        Ok(self.counts()?.2)
    }

    #[getter]
    fn sent(&self) -> PyResult<u64> {
        Ok(self.counts()?.0)
    }
}

/// An Arrow buffer over the bytes of a C-contiguous NumPy array that holds the array for as long
/// as any clone of it lives, so rows can be sent from where they are, from any thread, and the
/// memory stays valid even if the caller stops waiting (Ctrl-C) before the send ends. (NumPy, not
/// the buffer protocol: the buffer protocol is in Python's stable ABI only from 3.11, and the
/// module is built for the stable ABI of 3.10.)
fn held_bytes(array: &Bound<'_, PyArray1<u8>>) -> arrow_buffer::Buffer {
    let len = array.len();
    let ptr = std::ptr::NonNull::new(array.data()).unwrap_or(std::ptr::NonNull::dangling());
    let owner: Py<PyArray1<u8>> = array.clone().unbind();
    // SAFETY: an array's data stays allocated and in place while the array object lives: NumPy
    // frees it with the array (or with its base, which the array references), and refuses to
    // resize an array or its base while other references to it exist, which `owner` is. The
    // owner is dropped only with the last clone of the Arrow buffer (without the GIL, pyo3 defers
    // the decref). The caller checked the array is C-contiguous, so its `len` bytes are one run;
    // a zero-length array is never read through its dangling pointer. The bytes are only read;
    // any bit pattern is a valid `u8`. Python code writing to the array during the send is not
    // prevented: the rows sent would then mix old and new bytes.
    unsafe {
        arrow_buffer::Buffer::from_custom_allocation(ptr, len, Arc::new(std::panic::AssertUnwindSafe(owner)))
    }
}

/// librdkafka's queue stayed full for the whole wait.
fn is_queue_full(e: &Error) -> bool {
    e.kafka_code()
        .is_some_and(|k| k.code == rdkafka::types::RDKafkaErrorCode::QueueFull as i32)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Producer>()?;
    m.add_class::<SendReport>()?;
    m.add_class::<PreparedSend>()
}
