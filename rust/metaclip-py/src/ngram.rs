//! Bindings for the n-gram statistics (owned by the metadata-builder work).

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
