//! Bindings of the consumer engine: `KafkaDataset` (plan), `BatchReader` (one pass), `Batch`.

use super::arrow_numpy::{column_to_numpy, ArrowBufferOwner};
use super::errors::{to_pyerr, IntoPyResult};
use super::producer::SendReport;
use super::registry::PySchemaRegistry;
use super::{block_on_for, blocking, blocking_call, positive_seconds, seconds, Native};
use crate::consumer::batch::{KafkaBatch, MetaColumn, OffsetMap};
use crate::consumer::{Dataset, DatasetOptions, ErrorPolicy, Next, Position, Reader, Source};
use crate::error::Error;
use crate::format::columns::{ColumnSpec, ScalarType};
use crate::format::FormatSpec;
use crate::producer::SendTracker;
use crate::registry::{SchemaFailure, SchemaRegistry, SchemaType};
use arrow_array::{RecordBatch, StructArray};
use arrow_schema::Field;
use pyo3::exceptions::{PyKeyError, PyStopAsyncIteration};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyTuple};
use pyo3_arrow::ffi::{to_array_pycapsules, to_schema_pycapsule, to_stream_pycapsule, ArrayIterator};
use rdkafka::consumer::CommitMode;
use std::sync::{Arc, Mutex};

/// `(topic, partition, start, end)` of one partition of a read plan.
type PlanRow = (String, i32, i64, Option<i64>);

fn config_error(msg: String) -> PyErr {
    to_pyerr(Error::Config(msg))
}

/// `"earliest"`, `"latest"`, `"committed"`, `("timestamp", ms)` or `{(topic, partition): offset}`.
fn parse_position(obj: &Bound<'_, PyAny>, what: &str, default_for_offsets: Position) -> PyResult<Position> {
    if let Ok(s) = obj.extract::<String>() {
        return match s.as_str() {
            "earliest" => Ok(Position::Earliest),
            "latest" => Ok(Position::Latest),
            "committed" => Ok(Position::Committed),
            _ => Err(config_error(format!(
                "{what}='{s}': expected 'earliest', 'latest' or 'committed'"
            ))),
        };
    }
    if let Ok((kind, ms)) = obj.extract::<(String, i64)>() {
        if kind == "timestamp" {
            return Ok(Position::Timestamp(ms));
        }
    }
    if let Ok(map) = obj.extract::<std::collections::HashMap<(String, i32), i64>>() {
        return Ok(Position::Offsets {
            offsets: map.into_iter().collect(),
            default: Box::new(default_for_offsets),
        });
    }
    Err(config_error(format!(
        "{what}: expected 'earliest', 'latest', 'committed', a datetime, or {{(topic, partition): offset}}, got {}",
        obj.repr()?
    )))
}

#[allow(clippy::too_many_arguments)]
fn parse_format(
    format: &str,
    columns: Option<Vec<(String, String)>>,
    dtype: Option<String>,
    shape: Option<Vec<usize>>,
    avro_schema: Option<String>,
    avro_named: Vec<String>,
    registry_schemas: Option<std::collections::HashMap<u32, String>>,
    registry: Option<Arc<SchemaRegistry>>,
    proto_message: Option<prost_reflect::MessageDescriptor>,
) -> PyResult<FormatSpec> {
    Ok(match format {
        "tensor" => {
            let dtype = dtype.ok_or_else(|| config_error("format='tensor' needs dtype".into()))?;
            let dtype =
                ScalarType::parse(&dtype).ok_or_else(|| config_error(format!("unknown dtype '{dtype}'")))?;
            let shape = shape.ok_or_else(|| config_error("format='tensor' needs shape".into()))?;
            FormatSpec::Tensor { dtype, shape }
        }
        "json_schema" => {
            let columns = columns.ok_or_else(|| {
                config_error(
                    "format='json_schema' needs columns (json_schema=, or a schema_registry and subject)"
                        .into(),
                )
            })?;
            let columns = columns
                .iter()
                .map(|(n, t)| ColumnSpec::parse(n, t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(config_error)?;
            FormatSpec::JsonSchema { columns, registry }
        }
        "json" | "debezium" => {
            let columns = columns
                .ok_or_else(|| config_error(format!("format='{format}' needs a schema of columns")))?;
            let columns = columns
                .iter()
                .map(|(n, t)| ColumnSpec::parse(n, t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(config_error)?;
            if format == "json" {
                FormatSpec::Json { columns }
            } else {
                FormatSpec::Debezium { columns }
            }
        }
        "avro" => {
            let schema = avro_schema.ok_or_else(|| {
                config_error(
                    "format='avro' needs an Avro schema (avro_schema=, or a schema_registry and subject)"
                        .into(),
                )
            })?;
            let mut known: Vec<(u32, String)> = registry_schemas.unwrap_or_default().into_iter().collect();
            known.sort();
            FormatSpec::Avro {
                schema,
                named: avro_named,
                registry_schemas: known,
                registry,
            }
        }
        "protobuf" => FormatSpec::Protobuf {
            message: proto_message.ok_or_else(|| {
                config_error(
                    "format='protobuf' needs a schema (proto_file=, descriptor_set= or proto_schema=) \
                     or a schema_registry"
                        .into(),
                )
            })?,
            registry,
        },
        "raw" => FormatSpec::Raw,
        other => {
            return Err(config_error(format!(
            "unknown format '{other}' (expected tensor, json, json_schema, avro, protobuf, raw or debezium)"
        )))
        }
    })
}

fn offsets_to_py<'py>(py: Python<'py>, offsets: &OffsetMap) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for ((t, p), o) in offsets {
        d.set_item((t, *p), *o)?;
    }
    Ok(d)
}

/// The native side of `kafka_ml.KafkaDataset`: validated options and the resolved read plan.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct KafkaDataset {
    /// Holds no client or thread: a forked child may start readers of its own from it.
    inner: Arc<Dataset>,
}

#[pymethods]
impl KafkaDataset {
    #[new]
    #[pyo3(signature = (
        config, *, topics=None, partitions=None, format="raw", columns=None, dtype=None, shape=None,
        avro_schema=None, registry_schemas=None, registry=None, subject=None, proto_schema=None, proto_file=None,
        descriptor_set=None, message=None, metadata=Vec::new(), batch_size=1024, max_wait=0.1,
        start=None, end=None, on_error="error", dead_letter_topic=None, queue_bytes=64 << 20, timeout=10.0,
        commit=true
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        config: crate::client::ClientSettings,
        topics: Option<Vec<String>>,
        partitions: Option<Vec<(String, i32)>>,
        format: &str,
        columns: Option<Vec<(String, String)>>,
        dtype: Option<String>,
        shape: Option<Vec<usize>>,
        avro_schema: Option<String>,
        registry_schemas: Option<std::collections::HashMap<u32, String>>,
        registry: Option<Bound<'_, PySchemaRegistry>>,
        subject: Option<String>,
        proto_schema: Option<String>,
        proto_file: Option<std::path::PathBuf>,
        descriptor_set: Option<Vec<u8>>,
        message: Option<String>,
        metadata: Vec<String>,
        batch_size: usize,
        max_wait: f64,
        start: Option<Bound<'_, PyAny>>,
        end: Option<Bound<'_, PyAny>>,
        on_error: &str,
        dead_letter_topic: Option<String>,
        queue_bytes: usize,
        timeout: f64,
        commit: bool,
    ) -> PyResult<Self> {
        let registry = registry.map(|r| r.get().inner.clone());
        // The reader schema's subject when no schema is given (TopicNameStrategy: `<topic>-value`
        // unless a subject is named).
        let reader_subject = |what: &str| {
            match (&subject, topics.as_deref(), partitions.as_deref()) {
            (Some(s), _, _) => Ok(s.clone()),
            (None, Some([topic]), _) => Ok(format!("{topic}-value")),
            (None, None, Some([(topic, _), rest @ ..])) if rest.iter().all(|(t, _)| t == topic) => {
                Ok(format!("{topic}-value"))
            }
            _ => Err(config_error(format!(
                "format='{format}' over several topics: name the reader schema's subject (subject=) or give {what}"
            ))),
        }
        };
        let proto_message = match (
            format,
            super::protobuf::proto_source(proto_schema, proto_file, descriptor_set)?,
        ) {
            ("protobuf", Some(source)) => Some(
                crate::format::protobuf::load_message(&source, message.as_deref()).map_err(config_error)?,
            ),
            ("protobuf", None) => match &registry {
                Some(client) => {
                    let subject = reader_subject("proto_file")?;
                    let client = client.clone();
                    Some(
                        blocking_call(py, move || {
                            crate::format::protobuf::subject_message(&client, &subject, message.as_deref())
                        })?
                        .py_err()?,
                    )
                }
                None => None,
            },
            (_, Some(_)) => {
                return Err(config_error(format!(
                    "proto_schema, proto_file and descriptor_set are for format='protobuf', not '{format}'"
                )))
            }
            (_, None) => None,
        };
        // The reader schema (and so the columns), when not given: the subject's latest version.
        let mut avro_named = Vec::new();
        let avro_schema = match (format, avro_schema, &registry) {
            ("avro", None, Some(client)) => {
                let subject = reader_subject("avro_schema")?;
                let latest = {
                    let client = client.clone();
                    blocking_call(py, move || client.subject_version(&subject, None))?.py_err()?
                };
                if latest.schema_type != SchemaType::Avro {
                    return Err(config_error(format!(
                        "the registry's latest schema of the subject is {}, not Avro",
                        latest.schema_type.name()
                    )));
                }
                // Named types registered under other subjects: their schemas come along.
                if !latest.references.is_empty() {
                    let (client, references) = (client.clone(), latest.references.clone());
                    avro_named = blocking_call(py, move || {
                        crate::format::avro_referenced_schemas(&client, &references).map_err(|f| match f {
                            SchemaFailure::Bad(reason) => {
                                Error::Config(format!("the subject's latest Avro schema: {reason}"))
                            }
                            SchemaFailure::Unavailable(e) => e,
                        })
                    })?
                    .py_err()?;
                }
                Some(latest.schema)
            }
            (_, given, _) => given,
        };
        let source = match (topics, partitions) {
            (Some(t), None) => Source::Topics(t),
            (None, Some(p)) => Source::Partitions(p),
            _ => return Err(config_error("give either topics or partitions".into())),
        };
        let group = config.get("group.id").is_some();
        let start = match start {
            Some(s) => parse_position(&s, "start", Position::Earliest)?,
            None if group => Position::Committed,
            None => Position::Earliest,
        };
        let end = end
            .map(|e| parse_position(&e, "end", Position::Latest))
            .transpose()?;
        let metadata = metadata
            .iter()
            .map(|m| {
                MetaColumn::parse(m).ok_or_else(|| {
                    config_error(format!(
                        "unknown metadata column '{m}' (expected topic, partition, offset, timestamp, key, headers)"
                    ))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let on_error = match (on_error, dead_letter_topic) {
            ("error", _) => ErrorPolicy::Raise,
            ("skip", _) => ErrorPolicy::Skip,
            ("dead_letter", Some(topic)) => ErrorPolicy::DeadLetter { topic },
            ("dead_letter", None) => {
                return Err(config_error(
                    "on_error='dead_letter' needs dead_letter_topic".into(),
                ))
            }
            (other, _) => {
                return Err(config_error(format!(
                    "on_error='{other}': expected 'error', 'skip' or 'dead_letter'"
                )))
            }
        };
        let max_wait = seconds("max_wait", max_wait)?;
        let timeout = positive_seconds("timeout", timeout)?;
        let options = DatasetOptions {
            config,
            source,
            format: parse_format(
                format,
                columns,
                dtype,
                shape,
                avro_schema,
                avro_named,
                registry_schemas,
                registry,
                proto_message,
            )?,
            metadata,
            batch_size,
            max_wait,
            start,
            end,
            on_error,
            queue_bytes,
            timeout,
            commit,
        };
        // Opening waits on the cluster (metadata, watermarks) for up to `timeout`.
        let inner = blocking_call(py, move || Dataset::open(options))?.py_err()?;
        Ok(KafkaDataset {
            inner: Arc::new(inner),
        })
    }

    /// Offsets in the bounded read (None when unbounded).
    fn num_messages(&self) -> Option<u64> {
        self.inner.len()
    }

    /// `[(topic, partition, start, end)]` of a bounded or explicitly assigned read; None when the
    /// consumer group assigns partitions.
    fn plan(&self) -> Option<Vec<PlanRow>> {
        self.inner.plan().map(|p| {
            p.iter()
                .map(|r| (r.topic.clone(), r.partition, r.start, r.end))
                .collect()
        })
    }

    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }

    /// Column names of the batches.
    fn column_names(&self) -> Vec<String> {
        self.inner
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(to_schema_pycapsule(py, self.inner.schema().as_ref())?)
    }

    /// Starts one pass; `resume` is `{(topic, partition): next_offset}` from a `state_dict`.
    #[pyo3(signature = (resume=None))]
    fn reader(
        &self,
        py: Python<'_>,
        resume: Option<std::collections::HashMap<(String, i32), i64>>,
    ) -> PyResult<BatchReader> {
        let resume: Option<OffsetMap> = resume.map(|m| m.into_iter().collect());
        let dataset = self.inner.clone();
        let reader = blocking_call(py, move || dataset.reader(resume.as_ref()))?.py_err()?;
        Ok(BatchReader {
            inner: Native::new(Arc::new(Mutex::new(reader))),
        })
    }
}

fn lock(m: &Mutex<Reader>) -> std::sync::MutexGuard<'_, Reader> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One pass over a dataset: iterate (or `async for`) to get `Batch`es.
///
/// Its mutex is never held while the GIL is taken (an error becomes a Python exception only
/// after the guard is gone), and never waited for with the GIL held: a Python thread waiting for
/// it with the GIL while its holder waits for the GIL would deadlock both.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct BatchReader {
    inner: Native<Mutex<Reader>>,
}

impl BatchReader {
    fn reader(&self) -> PyResult<Arc<Mutex<Reader>>> {
        self.inner.get("reader")
    }

    /// Runs `f` on the reader (for other bindings, e.g. producer transactions), GIL released.
    pub(crate) fn with_reader<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Reader) -> R + Send,
    ) -> PyResult<R> {
        let reader = self.reader()?;
        Ok(py.detach(|| f(&lock(&reader))))
    }
}

impl BatchReader {
    /// `poll` that also ends once every tracker is done (`None` then, like a timeout). The
    /// reader's lock is not held while waiting (the `async for` path's waiter is used), so
    /// commits from other threads go on meanwhile.
    fn poll_until_delivered(
        py: Python<'_>,
        reader: &Arc<Mutex<Reader>>,
        wait: Option<std::time::Duration>,
        trackers: &[Arc<SendTracker>],
    ) -> PyResult<Option<crate::error::Result<Next>>> {
        let (committed, waiter) = py.detach(|| {
            let r = lock(reader);
            (r.commit_pending(), r.waiter())
        });
        committed.py_err()?;
        blocking(py, wait, |slice| {
            if trackers.iter().all(|t| t.is_done()) {
                return Some(None);
            }
            let delivered = async {
                for tracker in trackers {
                    tracker.finished().await;
                }
            };
            // Both branches are cancel-safe: an arrival is taken off the queue only in the poll
            // that returns it, and a tracker's wait holds nothing.
            let found = block_on_for(
                async {
                    tokio::select! {
                        biased;
                        arrival = waiter.wait() => Some(arrival),
                        () = delivered => None,
                    }
                },
                slice,
            )?;
            Some(found.map(|arrival| lock(reader).accept(arrival)))
        })
        .map(|found| {
            found.flatten().and_then(|next| match next {
                Ok(Next::Pending) => None, // only offset progress: nothing for the caller yet
                other => Some(other),
            })
        })
    }
}

#[pymethods]
impl BatchReader {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let reader = self.reader()?;
        let next = blocking(py, None, move |slice| match lock(&reader).next(slice) {
            Ok(Next::Pending) => None,
            other => Some(other),
        })?;
        match next.expect("waits without a timeout") {
            Ok(Next::Batch(b)) => Ok(Some(Batch::new(b))),
            Ok(Next::End) => Ok(None),
            Ok(Next::Pending) => unreachable!("blocking() retries pending"),
            Err(e) => Err(to_pyerr(e)),
        }
    }

    /// The next batch, or `None` if none arrives within `timeout` seconds; `StopIteration` at
    /// the end of a bounded read. For loops that must also notice other events while waiting.
    /// With `until_delivered` (send reports), `None` also as soon as every one of them is
    /// reported: one wait for input or acknowledgements, whichever comes first.
    #[pyo3(signature = (timeout, until_delivered=None))]
    fn poll(
        &self,
        py: Python<'_>,
        timeout: f64,
        until_delivered: Option<Vec<PyRef<'_, SendReport>>>,
    ) -> PyResult<Option<Batch>> {
        let reader = self.reader()?;
        let wait = Some(seconds("timeout", timeout)?);
        let next = match until_delivered {
            None => blocking(py, wait, move |slice| match lock(&reader).next(slice) {
                Ok(Next::Pending) => None,
                other => Some(other),
            })?,
            Some(reports) => {
                let trackers: Vec<_> = reports.iter().map(|r| r.tracker()).collect();
                drop(reports);
                Self::poll_until_delivered(py, &reader, wait, &trackers)?
            }
        };
        match next {
            None => Ok(None),
            Some(Ok(Next::Batch(b))) => Ok(Some(Batch::new(b))),
            Some(Ok(Next::End)) => Err(pyo3::exceptions::PyStopIteration::new_err(())),
            Some(Ok(Next::Pending)) => unreachable!("blocking() retries pending"),
            Some(Err(e)) => Err(to_pyerr(e)),
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.reader()?;
        let (committed, waiter) = py.detach(|| {
            let r = lock(&reader);
            (r.commit_pending(), r.waiter())
        });
        committed.py_err()?;
        super::future_into_py(py, async move {
            loop {
                let arrival = waiter.wait().await;
                // The guard is gone at the end of this statement, before an error takes the GIL.
                let accepted = lock(&reader).accept(arrival);
                match accepted.py_err()? {
                    Next::Batch(b) => return Ok(Batch::new(b)),
                    Next::Pending => continue,
                    Next::End => return Err(PyStopAsyncIteration::new_err(())),
                }
            }
        })
    }

    /// `{(topic, partition): next_offset}`: exactly after everything handed out.
    fn positions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let positions = self.with_reader(py, Reader::positions)?;
        offsets_to_py(py, &positions)
    }

    /// The partitions this reader owns now (the group's current assignment when subscribed).
    fn assignment(&self, py: Python<'_>) -> PyResult<Vec<(String, i32)>> {
        self.with_reader(py, Reader::assignment)
    }

    /// `(skipped, dead_lettered, queued_bytes, tombstones)`.
    fn stats(&self, py: Python<'_>) -> PyResult<(u64, u64, usize, u64)> {
        let s = self.with_reader(py, Reader::stats)?;
        Ok((s.skipped, s.dead_lettered, s.queued_bytes, s.tombstones))
    }

    /// Commits what was handed out (with a `group.id`), synchronously.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let reader = self.reader()?;
        blocking_call(py, move || lock(&reader).commit())?.py_err()
    }

    /// Commits exactly `{(topic, partition): next_offset}` for the partitions still owned;
    /// `asynchronous=True` returns once the commit is queued (failures are logged).
    #[pyo3(signature = (offsets, asynchronous=false))]
    fn commit_offsets(
        &self,
        py: Python<'_>,
        offsets: std::collections::HashMap<(String, i32), i64>,
        asynchronous: bool,
    ) -> PyResult<()> {
        let reader = self.reader()?;
        let offsets: OffsetMap = offsets.into_iter().collect();
        if asynchronous {
            // Returns once librdkafka has queued the commit: no helper thread (blocking_call
            // starts one per call, a cost a loop committing after every batch would pay each time).
            return py
                .detach(|| lock(&reader).commit_offsets(&offsets, CommitMode::Async))
                .py_err();
        }
        blocking_call(py, move || {
            lock(&reader).commit_offsets(&offsets, CommitMode::Sync)
        })?
        .py_err()
    }

    /// `{(topic, partition): messages}` after what was handed out, by the high watermark of the
    /// last fetch (no request is made).
    fn lag<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let lag = self.with_reader(py, Reader::lag)?;
        offsets_to_py(py, &lag)
    }

    /// Stops the consumer thread and commits what was handed out. Idempotent. In a forked child
    /// it does nothing: the reader, its thread and its consumer belong to the parent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.is_inherited() {
            return Ok(());
        }
        let reader = self.reader()?;
        blocking_call(py, move || lock(&reader).close())?.py_err()
    }
}

/// A batch of rows: Arrow columns, viewable as NumPy arrays without copies.
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct Batch {
    batch: RecordBatch,
    next_offsets: OffsetMap,
}

impl Batch {
    fn new(b: KafkaBatch) -> Self {
        Batch {
            batch: b.record_batch,
            next_offsets: b.next_offsets,
        }
    }

    fn field_and_column(&self, name: &str) -> PyResult<(&Field, &arrow_array::ArrayRef)> {
        let idx = self.batch.schema_ref().index_of(name).map_err(|_| {
            PyKeyError::new_err(format!("no column '{name}' (columns: {:?})", self.column_names()))
        })?;
        Ok((self.batch.schema_ref().field(idx), self.batch.column(idx)))
    }
}

#[pymethods]
impl Batch {
    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }

    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// `{(topic, partition): next_offset}` after this batch.
    #[getter]
    fn offsets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        offsets_to_py(py, &self.next_offsets)
    }

    /// Bytes held by the batch's Arrow buffers.
    #[getter]
    fn nbytes(&self) -> usize {
        self.batch.get_array_memory_size()
    }

    /// One column as a NumPy array (a view of the Arrow buffer where the type allows).
    fn __getitem__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let (field, column) = self.field_and_column(name)?;
        column_to_numpy(py, field, column)
    }

    /// `{column: ndarray}`; numeric and tensor columns are zero-copy, read-only views.
    #[pyo3(signature = (columns=None))]
    fn to_numpy<'py>(&self, py: Python<'py>, columns: Option<Vec<String>>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let names = columns.unwrap_or_else(|| self.column_names());
        for name in names {
            let (field, column) = self.field_and_column(&name)?;
            out.set_item(&name, column_to_numpy(py, field, column)?)?;
        }
        Ok(out)
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let array = StructArray::from(self.batch.clone());
        let field = Arc::new(Field::new_struct("", self.batch.schema().fields().clone(), false));
        Ok(to_array_pycapsules(py, field, &array, requested_schema)?)
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let array: arrow_array::ArrayRef = Arc::new(StructArray::from(self.batch.clone()));
        let field = Arc::new(Field::new_struct("", self.batch.schema().fields().clone(), false));
        let reader = ArrayIterator::new(vec![Ok(array)], field);
        Ok(to_stream_pycapsule(py, Box::new(reader), requested_schema)?)
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        Ok(to_schema_pycapsule(py, self.batch.schema_ref().as_ref())?)
    }

    fn __repr__(&self) -> String {
        format!(
            "Batch(num_rows={}, columns={:?})",
            self.batch.num_rows(),
            self.column_names()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<KafkaDataset>()?;
    m.add_class::<BatchReader>()?;
    m.add_class::<Batch>()?;
    m.add_class::<ArrowBufferOwner>()?;
    Ok(())
}
