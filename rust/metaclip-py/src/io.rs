//! Reading metadata lists and WebDataset tars, and digests of string lists.

use std::path::PathBuf;

use metaclip_core::{metadata, tar_json};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList};

use crate::buffers::pack_strings;
use crate::error::{input_error, to_py};

/// Hex xxh3-128 of a list of str, each prefixed by its UTF-8 length (a content digest:
/// about ten times faster than JSON-encoding and SHA-256 for a 500k-entry list).
#[pyfunction]
pub fn digest_strings(list: &Bound<'_, PyList>) -> PyResult<String> {
    let (data, offsets) = pack_strings(list)?;
    Ok(format!("{:032x}", metadata::digest_packed(&data, &offsets)))
}

/// Load a JSON list of strings (MC1 `metadata.json`); duplicates raise MetadataError.
#[pyfunction]
pub fn load_metadata_json(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
    let bytes = py
        .detach(|| metadata::read(&path))
        .map_err(|e| to_py(py, e))?;
    let entries = py
        .detach(|| metadata::parse_json_list(&bytes, &path))
        .map_err(|e| to_py(py, e))?;
    // Python strings straight from the file's bytes: no Rust copy of each entry first.
    PyList::new(py, entries.iter().map(|e| e.as_ref()))
}

/// Load a UTF-8 file with one entry per line; duplicates raise MetadataError.
#[pyfunction]
pub fn load_metadata_lines(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
    let bytes = py
        .detach(|| metadata::read(&path))
        .map_err(|e| to_py(py, e))?;
    let entries = py
        .detach(|| metadata::parse_lines(&bytes, &path))
        .map_err(|e| to_py(py, e))?;
    PyList::new(py, entries)
}

/// The JSON members of a WebDataset-style tar as JSON lines, each with its key field
/// (see `metaclip_core::tar_json`): (lines, rows, fields of the first row, image stems,
/// image member names), or None when the tar must be read member by member (a member
/// that is not a JSON object, or longer than `max_member` bytes). A tar cut short raises
/// InputError naming the file.
#[pyfunction]
pub fn tar_json_lines<'py>(
    py: Python<'py>,
    path: PathBuf,
    key_field: &str,
    max_member: u64,
) -> PyResult<TarJsonLines<'py>> {
    let got = match py.detach(|| tar_json::tar_json(&path, key_field, max_member)) {
        Ok(Some(got)) => got,
        Ok(None) => return Ok(None),
        Err(cut) => {
            let msg = format!("{}: cannot read tar ({cut})", path.display());
            return Err(PyErr::from_type(input_error(py)?.clone(), msg));
        }
    };
    let (stems, names) = got.images.into_iter().unzip();
    Ok(Some((
        PyBytes::new(py, &got.lines),
        got.rows,
        got.first_fields,
        stems,
        names,
    )))
}

type TarJsonLines<'py> = Option<(Bound<'py, PyBytes>, usize, usize, Vec<String>, Vec<String>)>;

/// Raise MetadataError naming duplicate entries, if any.
#[pyfunction]
pub fn check_unique(py: Python<'_>, entries: Vec<PyBackedStr>) -> PyResult<()> {
    py.detach(|| metadata::check_unique(&entries))
        .map_err(|e| to_py(py, e))
}
