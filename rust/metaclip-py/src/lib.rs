//! `metaclip._core`: thin PyO3 glue over metaclip-core.
use pyo3::prelude::*;

mod ngram;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    ngram::register(m)?;
    Ok(())
}
