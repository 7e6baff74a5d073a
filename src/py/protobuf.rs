//! Protobuf arguments shared by `KafkaDataset` and `Producer.send`: where the schema comes from.

use super::errors::IntoPyResult;
use crate::error::Error;
use crate::format::protobuf::load_message;
use crate::format::ProtoSource;
use pyo3::prelude::*;
use std::path::PathBuf;

/// The schema given by at most one of `proto_schema` (text), `proto_file` (a path) and
/// `descriptor_set` (a serialized `FileDescriptorSet`).
pub(crate) fn proto_source(
    proto_schema: Option<String>,
    proto_file: Option<PathBuf>,
    descriptor_set: Option<Vec<u8>>,
) -> PyResult<Option<ProtoSource>> {
    match (proto_schema, proto_file, descriptor_set) {
        (None, None, None) => Ok(None),
        (Some(text), None, None) => Ok(Some(ProtoSource::Text(text))),
        (None, Some(path), None) => Ok(Some(ProtoSource::File(path))),
        (None, None, Some(bytes)) => Ok(Some(ProtoSource::DescriptorSet(bytes))),
        _ => Err(Error::Config(
            "give one of proto_schema, proto_file and descriptor_set".into(),
        ))
        .py_err(),
    }
}

/// The schema `Producer.send(format="protobuf")` needs: one of the three arguments.
pub(crate) fn required_proto_source(
    proto_schema: Option<String>,
    proto_file: Option<PathBuf>,
    descriptor_set: Option<Vec<u8>>,
) -> PyResult<ProtoSource> {
    proto_source(proto_schema, proto_file, descriptor_set)?
        .ok_or_else(|| {
            Error::Config("format='protobuf' needs proto_schema, proto_file or descriptor_set".into())
        })
        .py_err()
}

/// The full name of the message a send writes (what the record subject name strategies use).
#[pyfunction]
#[pyo3(signature = (*, proto_schema=None, proto_file=None, descriptor_set=None, message=None))]
fn protobuf_message_name(
    proto_schema: Option<String>,
    proto_file: Option<PathBuf>,
    descriptor_set: Option<Vec<u8>>,
    message: Option<String>,
) -> PyResult<String> {
    let source = required_proto_source(proto_schema, proto_file, descriptor_set)?;
    let message = load_message(&source, message.as_deref())
        .map_err(Error::Config)
        .py_err()?;
    Ok(message.full_name().to_owned())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(protobuf_message_name, m)?)
}
