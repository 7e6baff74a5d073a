//! Arrow columns → NumPy arrays without copies.
//!
//! Fixed-width numeric columns, fixed-size lists of them (→ 2-D, or N-D with the tensor shape)
//! and uniform variable-length lists become read-only `ndarray`s that *view* the Arrow buffer;
//! the array's `base` is a small owner object that keeps the buffer alive. Only columns that
//! cannot be viewed (strings, bytes, booleans, nullable numbers with nulls) are copied.

use crate::format::tensor_shape_key;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field};
use ndarray::{ArrayViewD, IxDyn};
use numpy::{Element, PyArray1, PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

/// Keeps an Arrow buffer alive while NumPy arrays view it (it is their `base`).
#[pyclass(module = "kafka_ml._native", frozen)]
pub struct ArrowBufferOwner {
    buffer: Buffer,
}

#[pymethods]
impl ArrowBufferOwner {
    /// Address of the viewed memory (for tests and debugging).
    #[getter]
    fn address(&self) -> usize {
        self.buffer.as_ptr() as usize
    }

    fn __len__(&self) -> usize {
        self.buffer.len()
    }
}

/// A read-only ndarray of `shape` over `values`, owned by its Arrow buffer.
fn view<'py, T: ArrowPrimitiveType>(
    py: Python<'py>,
    values: &PrimitiveArray<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>>
where
    T::Native: Element,
{
    let scalars = values.values();
    let owner = Bound::new(
        py,
        ArrowBufferOwner {
            buffer: scalars.inner().clone(),
        },
    )?;
    // SAFETY: `scalars` holds exactly prod(shape) aligned elements (checked by the callers), and
    // the buffer outlives the array because `owner` becomes its base object.
    let array = unsafe {
        let v = ArrayViewD::from_shape_ptr(IxDyn(shape), scalars.as_ptr());
        PyArrayDyn::<T::Native>::borrow_from_array(&v, owner.into_any())
    };
    // Arrow buffers are immutable and may be shared: the view must not write to them.
    array.readwrite().make_nonwriteable();
    Ok(array.into_any())
}

macro_rules! with_primitive {
    ($array:expr, $t:ident => $body:expr, $other:expr) => {
        match $array.data_type() {
            DataType::Int8 => {
                type $t = Int8Type;
                $body
            }
            DataType::Int16 => {
                type $t = Int16Type;
                $body
            }
            DataType::Int32 => {
                type $t = Int32Type;
                $body
            }
            DataType::Int64 => {
                type $t = Int64Type;
                $body
            }
            DataType::UInt8 => {
                type $t = UInt8Type;
                $body
            }
            DataType::UInt16 => {
                type $t = UInt16Type;
                $body
            }
            DataType::UInt32 => {
                type $t = UInt32Type;
                $body
            }
            DataType::UInt64 => {
                type $t = UInt64Type;
                $body
            }
            DataType::Float32 => {
                type $t = Float32Type;
                $body
            }
            DataType::Float64 => {
                type $t = Float64Type;
                $body
            }
            _ => $other,
        }
    };
}

fn not_viewable(field: &Field, why: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "column '{}' ({}) cannot become a NumPy array: {why}; read it through Arrow (pyarrow.record_batch(batch))",
        field.name(),
        field.data_type()
    ))
}

/// Converts one column; `shape` is the per-row shape for list columns.
pub fn column_to_numpy<'py>(py: Python<'py>, field: &Field, array: &ArrayRef) -> PyResult<Bound<'py, PyAny>> {
    let rows = array.len();
    match array.data_type() {
        DataType::FixedSizeList(_, width) => {
            let list = array.as_fixed_size_list();
            if list.null_count() > 0 {
                return Err(not_viewable(field, "it has null rows"));
            }
            let mut shape = vec![rows];
            match field.metadata().get(tensor_shape_key()) {
                Some(s) => shape.extend(parse_shape(s)),
                None => shape.push(*width as usize),
            }
            let values = list.values();
            with_primitive!(values, T => view::<T>(py, values.as_primitive::<T>(), &shape),
                Err(not_viewable(field, "its elements are not numbers")))
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            if list.null_count() > 0 {
                return Err(not_viewable(field, "it has null rows"));
            }
            let offsets = list.value_offsets();
            let width = if rows == 0 {
                0
            } else {
                (offsets[1] - offsets[0]) as usize
            };
            if offsets.windows(2).any(|w| (w[1] - w[0]) as usize != width) {
                return Err(not_viewable(field, "its rows have different lengths"));
            }
            let first = offsets.first().copied().unwrap_or(0) as usize;
            let values = list.values().slice(first, rows * width);
            with_primitive!(values, T => view::<T>(py, values.as_primitive::<T>(), &[rows, width]),
                Err(not_viewable(field, "its elements are not numbers")))
        }
        DataType::Boolean => {
            let b = array.as_boolean();
            if b.null_count() > 0 {
                return Err(not_viewable(field, "it has nulls"));
            }
            let v: Vec<bool> = b.values().iter().collect();
            Ok(PyArray1::from_vec(py, v).into_any())
        }
        DataType::Utf8 => {
            let s = array.as_string::<i32>();
            let items: Vec<Py<PyAny>> = s
                .iter()
                .map(|v| {
                    v.map_or_else(
                        || py.None(),
                        |v| v.into_pyobject(py).expect("str").into_any().unbind(),
                    )
                })
                .collect();
            Ok(PyArray1::from_vec(py, items).into_any())
        }
        DataType::Binary => {
            let b = array.as_binary::<i32>();
            let items: Vec<Py<PyAny>> = b
                .iter()
                .map(|v| v.map_or_else(|| py.None(), |v| PyBytes::new(py, v).into_any().unbind()))
                .collect();
            Ok(PyArray1::from_vec(py, items).into_any())
        }
        DataType::Timestamp(_, _) => {
            let ts = array.as_primitive::<TimestampMillisecondType>();
            let ints = PrimitiveArray::<Int64Type>::new(ts.values().clone(), None);
            if ts.null_count() > 0 {
                return Err(not_viewable(field, "it has nulls"));
            }
            view::<Int64Type>(py, &ints, &[rows])?.call_method1("view", ("datetime64[ms]",))
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            let keys = map.keys().as_string::<i32>();
            let values = map.values().as_binary::<i32>();
            let offsets = map.value_offsets();
            let mut rows_out: Vec<Py<PyAny>> = Vec::with_capacity(rows);
            for w in offsets.windows(2) {
                let pairs = PyList::empty(py);
                for i in w[0] as usize..w[1] as usize {
                    let v: Py<PyAny> = if values.is_null(i) {
                        py.None()
                    } else {
                        PyBytes::new(py, values.value(i)).into_any().unbind()
                    };
                    pairs.append(PyTuple::new(
                        py,
                        [keys.value(i).into_pyobject(py)?.into_any().unbind(), v],
                    )?)?;
                }
                rows_out.push(pairs.into_any().unbind());
            }
            Ok(PyArray1::from_vec(py, rows_out).into_any())
        }
        _ => {
            if array.null_count() > 0 {
                // Nulls have no NumPy representation without a copy; floats get NaN.
                return match array.data_type() {
                    DataType::Float32 | DataType::Float64 => {
                        let pyarrow_free = view_or_err(py, field, array)?;
                        let copy = pyarrow_free.call_method0("copy")?;
                        let mask: Vec<bool> = (0..rows).map(|i| array.is_null(i)).collect();
                        let kwargs = PyDict::new(py);
                        kwargs.set_item("where", PyArray1::from_vec(py, mask))?;
                        py.import("numpy")?
                            .getattr("copyto")?
                            .call((&copy, f64::NAN), Some(&kwargs))?;
                        Ok(copy)
                    }
                    _ => Err(not_viewable(field, "it has nulls")),
                };
            }
            view_or_err(py, field, array)
        }
    }
}

fn view_or_err<'py>(py: Python<'py>, field: &Field, array: &ArrayRef) -> PyResult<Bound<'py, PyAny>> {
    let rows = array.len();
    with_primitive!(array, T => view::<T>(py, array.as_primitive::<T>(), &[rows]),
        Err(not_viewable(field, "this type has no NumPy equivalent")))
}

fn parse_shape(s: &str) -> Vec<usize> {
    s.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect()
}
