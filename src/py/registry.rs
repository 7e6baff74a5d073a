//! `kafka_ml.SchemaRegistry`: the shared registry client, handed to datasets and producers.

use super::errors::IntoPyResult;
use crate::error::Error;
use crate::format::protobuf::load_message;
use crate::format::protobuf_registration;
use crate::registry::{
    RegisteredSchema, RegistryAuth, RegistrySettings, SchemaRegistry as Client, SchemaType,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;

/// A Schema Registry (Confluent's REST API; Apicurio at `/apis/ccompat/v7`, Karapace,
/// Redpanda): `SchemaRegistry(url, auth=(user, secret) | bearer_token, verify=True | ca_path,
/// timeout=10.0)`. Writer schemas are fetched by id once and cached; requests that fail for a
/// transient reason are retried. Credentials are never shown (not in the repr, nor in errors).
#[pyclass(module = "kafka_ml._native", name = "SchemaRegistry", frozen)]
pub struct PySchemaRegistry {
    pub(crate) inner: Arc<Client>,
    auth_kind: &'static str,
}

#[pymethods]
impl PySchemaRegistry {
    #[new]
    #[pyo3(signature = (url, *, auth=None, verify=None, timeout=10.0))]
    fn new(
        url: &str,
        auth: Option<&Bound<'_, PyAny>>,
        verify: Option<&Bound<'_, PyAny>>,
        timeout: f64,
    ) -> PyResult<Self> {
        let mut settings = RegistrySettings::from_url(url).py_err()?;
        if let Some(auth) = auth {
            settings.auth = Some(if let Ok(token) = auth.extract::<String>() {
                RegistryAuth::Bearer(token)
            } else if let Ok((user, password)) = auth.extract::<(String, String)>() {
                RegistryAuth::Basic { user, password }
            } else {
                return Err(Error::Config(
                    "SchemaRegistry auth must be (user, secret) or a bearer token (str)".into(),
                ))
                .py_err();
            });
        }
        if let Some(verify) = verify {
            if let Ok(flag) = verify.extract::<bool>() {
                settings.verify = flag;
            } else if let Ok(path) = verify.extract::<std::path::PathBuf>() {
                settings.ca_location = Some(path.to_string_lossy().into_owned());
            } else {
                return Err(Error::Config(
                    "SchemaRegistry verify must be True, False or a CA file path".into(),
                ))
                .py_err();
            }
        }
        settings.timeout = super::positive_seconds("timeout", timeout)?;
        let auth_kind = match &settings.auth {
            None => "",
            Some(RegistryAuth::Basic { .. }) => ", auth=basic",
            Some(RegistryAuth::Bearer(_)) => ", auth=bearer",
        };
        Ok(PySchemaRegistry {
            inner: Arc::new(Client::new(settings).py_err()?),
            auth_kind,
        })
    }

    /// The API's base URL (without credentials).
    #[getter]
    fn url(&self) -> &str {
        self.inner.url()
    }

    /// The schema registered under `schema_id`: `{"id", "schema", "schema_type", "references",
    /// "version"}`.
    fn schema<'py>(&self, py: Python<'py>, schema_id: u32) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let found = super::blocking_call(py, move || inner.schema_by_id(schema_id))?.py_err()?;
        schema_dict(py, &found)
    }

    /// A version of `subject` (the latest by default), as `schema` returns it.
    #[pyo3(signature = (subject, version=None))]
    fn subject_version<'py>(
        &self,
        py: Python<'py>,
        subject: &str,
        version: Option<i32>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.clone();
        let subject = subject.to_owned();
        let found = super::blocking_call(py, move || inner.subject_version(&subject, version))?.py_err()?;
        schema_dict(py, &found)
    }

    /// The id of `schema` under `subject`, registering it first when `auto_register` (an
    /// incompatible schema raises `SchemaRegistryError` with the registry's message).
    #[pyo3(signature = (subject, schema, schema_type="AVRO", *, auto_register=true))]
    fn register(
        &self,
        py: Python<'_>,
        subject: &str,
        schema: &str,
        schema_type: &str,
        auto_register: bool,
    ) -> PyResult<u32> {
        let schema_type = SchemaType::parse(schema_type).py_err()?;
        let inner = self.inner.clone();
        let (subject, schema) = (subject.to_owned(), schema.to_owned());
        super::blocking_call(py, move || {
            inner.id_for(&subject, &schema, schema_type, &[], auto_register)
        })?
        .py_err()
    }

    /// The id of a Protobuf message's file under `subject`, registering it first when
    /// `auto_register`, and before it every file it imports (well-known types aside) under a
    /// subject named by the import path, referenced by the files that import them.
    #[pyo3(signature = (subject, *, proto_schema=None, proto_file=None, descriptor_set=None, message=None, auto_register=true))]
    #[allow(clippy::too_many_arguments)] // the Protobuf schema arguments of `Producer.send`
    fn register_protobuf(
        &self,
        py: Python<'_>,
        subject: &str,
        proto_schema: Option<String>,
        proto_file: Option<PathBuf>,
        descriptor_set: Option<Vec<u8>>,
        message: Option<String>,
        auto_register: bool,
    ) -> PyResult<u32> {
        let source = super::protobuf::required_proto_source(proto_schema, proto_file, descriptor_set)?;
        let inner = self.inner.clone();
        let subject = subject.to_owned();
        super::blocking_call(py, move || {
            let message = load_message(&source, message.as_deref()).map_err(Error::Config)?;
            let registration =
                protobuf_registration::registration(&source, &message).map_err(Error::Config)?;
            protobuf_registration::register(&inner, &subject, &registration, auto_register)
        })?
        .py_err()
    }

    fn __repr__(&self) -> String {
        format!("SchemaRegistry('{}'{})", self.inner.url(), self.auth_kind)
    }
}

fn schema_dict<'py>(py: Python<'py>, s: &RegisteredSchema) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", s.id)?;
    d.set_item("schema", &s.schema)?;
    d.set_item("schema_type", s.schema_type.name())?;
    let refs = PyList::empty(py);
    for r in &s.references {
        let rd = PyDict::new(py);
        rd.set_item("name", &r.name)?;
        rd.set_item("subject", &r.subject)?;
        rd.set_item("version", r.version)?;
        refs.append(rd)?;
    }
    d.set_item("references", refs)?;
    d.set_item("version", s.version)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySchemaRegistry>()
}
