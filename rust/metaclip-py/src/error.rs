//! The exception classes of `metaclip.exceptions`, and the one place core errors become
//! Python exceptions ([`to_py`]).
//!
//! `MetaclipError` comes from `create_exception!`. The others also subclass `ValueError`
//! (callers catch that), and `create_exception!` takes a single base, so they are made once,
//! at first use, with Python's `type(name, bases, namespace)`. Every class reports
//! `__module__ == "metaclip.exceptions"`, where the package re-exports them, so reprs,
//! tracebacks and pickles name that module.

use metaclip_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

create_exception!(
    metaclip.exceptions,
    MetaclipError,
    PyException,
    "Base class of every error metaclip raises on purpose."
);

/// `type(name, bases, {"__doc__": doc, "__module__": "metaclip.exceptions"})`, made once.
fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    doc: &str,
    bases: impl FnOnce() -> PyResult<Bound<'py, PyTuple>>,
) -> PyResult<&'static Py<PyType>> {
    cell.get_or_try_init(py, || {
        let namespace = PyDict::new(py);
        namespace.set_item("__doc__", doc)?;
        namespace.set_item("__module__", "metaclip.exceptions")?;
        let made = py.get_type::<PyType>().call1((name, bases()?, namespace))?;
        Ok(made.cast_into::<PyType>()?.unbind())
    })
}

/// `name(MetaclipError, ValueError)`, made once into `cell`.
fn value_error<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    doc: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    let bases = || {
        let base = (
            py.get_type::<MetaclipError>(),
            py.get_type::<PyValueError>(),
        );
        base.into_pyobject(py)
    };
    Ok(class(py, cell, name, doc, bases)?.bind(py))
}

/// `MetadataError(MetaclipError, ValueError)`.
pub fn metadata_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let doc = "A metadata file or list is malformed (duplicates, bad JSON, bad line).";
    value_error(py, &CELL, "MetadataError", doc)
}

/// `InputError(MetaclipError, ValueError)` (raised by the Python pipeline).
pub fn input_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let doc = "A pool shard or its columns cannot be used (names the file and row).";
    value_error(py, &CELL, "InputError", doc)
}

/// `ModelError(MetaclipError, ValueError)`.
pub fn model_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CELL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let doc = "A language-identification model file is corrupt, truncated or unsupported.";
    value_error(py, &CELL, "ModelError", doc)
}

/// The one place core errors become Python exceptions.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let msg = err.to_string();
    let class = match err {
        Error::Io { source, .. } => {
            return PyOSError::new_err((source.raw_os_error().unwrap_or(0), msg))
        }
        Error::InvalidArgument(_) => return PyValueError::new_err(msg),
        Error::Interrupted => return PyKeyboardInterrupt::new_err(msg),
        Error::Parse { .. } | Error::Duplicates { .. } | Error::StaleFile { .. } => {
            metadata_error(py)
        }
        Error::Model { .. } => model_error(py),
    };
    match class {
        Ok(class) => PyErr::from_type(class.clone(), msg),
        Err(_) => PyValueError::new_err(msg),
    }
}
