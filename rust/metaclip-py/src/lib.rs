//! `metaclip._core`: thin PyO3 glue over metaclip-core.
//!
//! Inputs are extracted into owned data or borrowed buffers while attached, the work runs
//! detached from the interpreter, and results come back as `bytearray`s (or, for the large
//! ones, buffers from a caller's `alloc`) that the Python wrapper (`metaclip.core`) views
//! as numpy arrays without copying. One module per domain; the helpers they share are in
//! `buffers` (Python buffers ↔ slices, chunked detached runs) and `error` (the exception
//! classes and the mapping of core errors onto them).

mod buffers;
mod error;
mod io;
mod lid;
mod matcher;
mod ngram;
mod sampling;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Exceptions (re-exported by `metaclip.exceptions`).
    m.add("MetaclipError", py.get_type::<error::MetaclipError>())?;
    m.add("MetadataError", error::metadata_error(py)?)?;
    m.add("InputError", error::input_error(py)?)?;
    m.add("ModelError", error::model_error(py)?)?;
    // Matching.
    m.add_class::<matcher::Matcher>()?;
    m.add_function(wrap_pyfunction!(matcher::spaced, m)?)?;
    m.add_function(wrap_pyfunction!(matcher::is_cjk_like, m)?)?;
    m.add_function(wrap_pyfunction!(matcher::matcher_digest, m)?)?;
    m.add("MAX_ENTRIES", metaclip_core::matcher::MAX_ENTRIES)?;
    let modes = metaclip_core::matcher::Mode::ALL.map(|mode| mode.name());
    m.add("MODES", pyo3::types::PyTuple::new(py, modes)?)?;
    // Counting, thresholds, sampling.
    m.add_function(wrap_pyfunction!(sampling::count_ids, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::count_rows, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::count_sparse, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::probabilities, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::tail_mass, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::threshold_for_tail, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::hash_keys, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::hash_keys_packed, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::coin, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::sample_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::sample_images, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::keep_probability, m)?)?;
    m.add_function(wrap_pyfunction!(sampling::select_rows, m)?)?;
    // Metadata lists, tars, digests.
    m.add_function(wrap_pyfunction!(io::digest_strings, m)?)?;
    m.add_function(wrap_pyfunction!(io::load_metadata_json, m)?)?;
    m.add_function(wrap_pyfunction!(io::load_metadata_lines, m)?)?;
    m.add_function(wrap_pyfunction!(io::check_unique, m)?)?;
    m.add_function(wrap_pyfunction!(io::tar_json_lines, m)?)?;
    // Language identification.
    m.add_class::<lid::LanguageIdentifier>()?;
    m.add_function(wrap_pyfunction!(lid::lid_default_mapping_tsv, m)?)?;
    m.add_function(wrap_pyfunction!(lid::lid_load_mapping, m)?)?;
    // N-gram statistics for the metadata builder.
    m.add_class::<ngram::NgramCounter>()?;
    m.add_class::<ngram::TitleCounts>()?;
    m.add_function(wrap_pyfunction!(ngram::ngram_pmi, m)?)?;
    m.add_function(wrap_pyfunction!(ngram::ngram_pmi_passes, m)?)?;
    Ok(())
}
