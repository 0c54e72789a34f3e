//! `metaclip._core`: thin PyO3 glue over metaclip-core.
//!
//! Inputs are extracted into owned data or borrowed buffers while attached, the work runs
//! detached from the interpreter, and results come back as `bytearray`s (or, for the large
//! ones, buffers from a caller's `alloc`) that the Python wrapper (`metaclip.core`) views
//! as numpy arrays without copying.

use std::path::PathBuf;

use metaclip_core::matcher::{self, Mode, Packed};
use metaclip_core::{count, metadata, sample, spacing, tar_json, threshold, Error};
use pyo3::buffer::{Element, PyBuffer, PyUntypedBuffer};
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString};

mod lid;
mod ngram;

/// Texts per detached call: between calls we check for Ctrl-C.
const MACRO_CHUNK: usize = 1 << 17;

fn py_exception(py: Python<'_>, class: &str, msg: String) -> PyErr {
    let made = py
        .import("metaclip.exceptions")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((msg.clone(),)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyValueError::new_err(msg),
    }
}

/// The one place core errors become Python exceptions.
pub(crate) fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { source, .. } => PyOSError::new_err((source.raw_os_error().unwrap_or(0), msg)),
        Error::Parse { .. } | Error::Duplicates { .. } => py_exception(py, "MetadataError", msg),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
    }
}

/// Borrow a C-contiguous buffer of `T` as a slice.
///
/// SAFETY of the result: the exporter keeps the memory alive and in place while `buf` is
/// held; callers keep `buf` alive for the slice's lifetime. Concurrent mutation from
/// another Python thread would be a data race, as it is for numpy's own C loops.
fn as_slice<T: Element>(buf: &PyBuffer<T>) -> PyResult<&[T]> {
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("array must be C-contiguous"));
    }
    let n = buf.item_count();
    if n == 0 {
        return Ok(&[]);
    }
    // SAFETY: PyBuffer::get checked format, item size and alignment for T; see above.
    Ok(unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const T, n) })
}

fn raw_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is a plain numeric type (u8/u32/u64/i64/f64) with no padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn bytes_of<'py, T: Copy>(py: Python<'py>, v: &[T]) -> Bound<'py, PyByteArray> {
    PyByteArray::new(py, raw_bytes(v))
}

/// An output of `nbytes` filled by `fill` (detached, so other threads keep running Python
/// during large copies): a `bytearray`, or when `alloc` is given the writable buffer
/// `alloc(nbytes)` returns (e.g. `pyarrow.allocate_buffer`, whose pool reuses freed memory
/// where a fresh `bytearray` this large costs fresh pages).
fn output<'py>(
    py: Python<'py>,
    alloc: Option<&Bound<'py, PyAny>>,
    nbytes: usize,
    fill: impl FnOnce(&mut [u8]) + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(alloc) = alloc else {
        let out = PyByteArray::new_with(py, nbytes, |_| Ok(()))?;
        // SAFETY: a fresh bytearray that no Python code has seen, so nothing resizes it.
        let bytes = unsafe { out.as_bytes_mut() };
        py.detach(move || fill(bytes));
        return Ok(out.into_any());
    };
    let obj = alloc.call1((nbytes,))?;
    let buf = PyUntypedBuffer::get(&obj)?;
    if buf.readonly() || !buf.is_c_contiguous() || buf.len_bytes() != nbytes {
        return Err(PyValueError::new_err(format!(
            "alloc({nbytes}) must return a writable, contiguous buffer of exactly that size"
        )));
    }
    if nbytes > 0 {
        // SAFETY: a writable, contiguous buffer of `nbytes` bytes, which `obj`
        // and the `buf` view keep alive; nothing else has seen the fresh object yet.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr() as *mut u8, nbytes) };
        py.detach(move || fill(bytes));
    }
    Ok(obj)
}

/// Copy Python strings into one packed buffer (so the work can run detached).
fn pack_strings(list: &Bound<'_, PyList>) -> PyResult<(Vec<u8>, Vec<i64>)> {
    let mut data = Vec::new();
    let mut offsets = Vec::with_capacity(list.len() + 1);
    offsets.push(0i64);
    for (i, item) in list.iter().enumerate() {
        let s = item.cast::<PyString>().map_err(|_| {
            PyValueError::new_err(format!("text {i} is not a str (got {})", item.get_type()))
        })?;
        data.extend_from_slice(s.to_str()?.as_bytes());
        offsets.push(data.len() as i64);
    }
    Ok((data, offsets))
}

/// A matcher built once over a metadata list (entry id = position).
#[pyclass(frozen, module = "metaclip._core")]
struct Matcher {
    inner: matcher::Matcher,
}

type CsrBytes<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyByteArray>,
);

impl Matcher {
    fn run<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        offsets: &[i64],
        threads: usize,
        alloc: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<CsrBytes<'py>> {
        let packed = Packed::new(data, offsets).map_err(|e| to_py(py, e))?;
        let n = offsets.len() - 1;
        let mut parts = Vec::new();
        for start in (0..n).step_by(MACRO_CHUNK) {
            let range = start..(start + MACRO_CHUNK).min(n);
            parts.push(py.detach(|| self.inner.match_batch(&packed, range, threads)));
            py.check_signals()?;
        }
        // Straight from the parts into the Python buffers: no concatenated copy in between.
        let n_ids: usize = parts.iter().map(|p| p.ids.len()).sum();
        let offsets = output(py, alloc, (n + 1) * 8, |out| {
            let mut at = out.chunks_exact_mut(8);
            let mut base = 0i64;
            if let Some(first) = at.next() {
                first.copy_from_slice(&0i64.to_ne_bytes());
            }
            for p in &parts {
                // Offsets first in the zip: zip pulls its left side before its right one.
                for (o, dst) in p.offsets[1..].iter().zip(at.by_ref()) {
                    dst.copy_from_slice(&(o + base).to_ne_bytes());
                }
                base += p.ids.len() as i64;
            }
        })?;
        let ids = output(py, alloc, n_ids * 4, |out| {
            let mut at = 0;
            for p in &parts {
                let raw = raw_bytes(&p.ids);
                out[at..at + raw.len()].copy_from_slice(raw);
                at += raw.len();
            }
        })?;
        let mut invalid = Vec::new();
        let mut rows = 0u64;
        for p in &parts {
            invalid.extend(p.invalid.iter().map(|i| i + rows));
            rows += (p.offsets.len() - 1) as u64;
        }
        Ok((offsets, ids, bytes_of(py, &invalid)))
    }
}

#[pymethods]
impl Matcher {
    #[new]
    #[pyo3(signature = (entries, mode = "mc1"))]
    fn new(py: Python<'_>, entries: Vec<PyBackedStr>, mode: &str) -> PyResult<Self> {
        let mode = Mode::parse(mode).map_err(|e| to_py(py, e))?;
        let inner = py
            .detach(|| matcher::Matcher::new(&entries, mode))
            .map_err(|e| to_py(py, e))?;
        Ok(Matcher { inner })
    }

    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode().name()
    }

    #[getter]
    fn n_entries(&self) -> usize {
        self.inner.n_entries()
    }

    #[getter]
    fn n_word_entries(&self) -> usize {
        self.inner.n_word_entries()
    }

    #[getter]
    fn n_substring_entries(&self) -> usize {
        self.inner.n_substring_entries()
    }

    #[getter]
    fn n_words(&self) -> usize {
        self.inner.n_words()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    fn __len__(&self) -> usize {
        self.inner.n_entries()
    }

    /// Match one text; sorted unique entry ids.
    fn match_text(&self, text: &str) -> Vec<u32> {
        self.inner.match_text(text)
    }

    /// Match a list of str. Returns (offsets int64, ids uint32, invalid uint64) as bytes
    /// (offsets and ids in buffers from `alloc(nbytes)` when given, see `output`).
    #[pyo3(signature = (texts, threads = 0, alloc = None))]
    fn match_list<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        threads: usize,
        alloc: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<CsrBytes<'py>> {
        let (data, offsets) = pack_strings(texts)?;
        self.run(py, &data, &offsets, threads, alloc)
    }

    /// Match texts packed as UTF-8 bytes plus int64 offsets (an Arrow string column).
    #[pyo3(signature = (data, offsets, threads = 0, alloc = None))]
    fn match_packed<'py>(
        &self,
        py: Python<'py>,
        data: PyBuffer<u8>,
        offsets: PyBuffer<i64>,
        threads: usize,
        alloc: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<CsrBytes<'py>> {
        self.run(py, as_slice(&data)?, as_slice(&offsets)?, threads, alloc)
    }
}

/// `spacing(text.strip())` of spec §2 (fixed=True: every Unicode space becomes " ").
#[pyfunction]
#[pyo3(signature = (text, fixed = false))]
fn spaced(text: &str, fixed: bool) -> String {
    let mut out = Vec::new();
    spacing::spaced_into(text, fixed, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[pyfunction]
fn is_cjk_like(c: char) -> bool {
    matcher::is_cjk_like(c)
}

/// Per-entry counts (uint64 bytes) of CSR ids.
#[pyfunction]
fn count_ids<'py>(
    py: Python<'py>,
    ids: PyBuffer<u32>,
    n_entries: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let ids = as_slice(&ids)?;
    let counts = py
        .detach(|| count::count_ids(ids, n_entries))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &counts))
}

/// Per-entry counts (uint64 bytes) of the ids in the CSR rows whose `keep` byte is set.
#[pyfunction]
fn count_rows<'py>(
    py: Python<'py>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    keep: PyBuffer<u8>,
    n_entries: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (o, i, k) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&keep)?);
    let counts = py
        .detach(|| count::count_rows(o, i, k, n_entries))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &counts))
}

/// (ids uint32 bytes, counts uint64 bytes) of the entries that occur in `ids`, or in the
/// CSR rows whose `keep` byte is set when `offsets` and `keep` are given; ascending ids.
#[pyfunction]
#[pyo3(signature = (ids, n_entries, offsets = None, keep = None))]
fn count_sparse<'py>(
    py: Python<'py>,
    ids: PyBuffer<u32>,
    n_entries: usize,
    offsets: Option<PyBuffer<i64>>,
    keep: Option<PyBuffer<u8>>,
) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyByteArray>)> {
    let ids = as_slice(&ids)?;
    let rows = match (&offsets, &keep) {
        (Some(o), Some(k)) => Some((as_slice(o)?, as_slice(k)?)),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "give both offsets and keep, or neither",
            ))
        }
    };
    let (e, c) = py
        .detach(|| count::count_sparse(ids, n_entries, rows))
        .map_err(|e| to_py(py, e))?;
    Ok((bytes_of(py, &e), bytes_of(py, &c)))
}

/// MC1 probabilities `min(1, t / count)`, 0 for count 0 (float64 bytes).
#[pyfunction]
fn probabilities<'py>(
    py: Python<'py>,
    counts: PyBuffer<u64>,
    t: f64,
) -> PyResult<Bound<'py, PyByteArray>> {
    if !(t.is_finite() && t > 0.0) {
        return Err(PyValueError::new_err(format!(
            "t must be a positive number, got {t}"
        )));
    }
    let counts = as_slice(&counts)?;
    let p = py.detach(|| threshold::probabilities(counts, t));
    Ok(bytes_of(py, &p))
}

#[pyfunction]
fn tail_mass(counts: PyBuffer<u64>, t: f64) -> PyResult<f64> {
    Ok(threshold::tail_mass(as_slice(&counts)?, t))
}

#[pyfunction]
fn threshold_for_tail(counts: PyBuffer<u64>, tail: f64) -> PyResult<u64> {
    if !(0.0..=1.0).contains(&tail) {
        return Err(PyValueError::new_err(format!(
            "tail must be in [0, 1], got {tail}"
        )));
    }
    Ok(threshold::threshold_for_tail(as_slice(&counts)?, tail))
}

/// Hex xxh3-128 of a list of str, each prefixed by its UTF-8 length (a content digest:
/// about ten times faster than JSON-encoding and SHA-256 for a 500k-entry list).
#[pyfunction]
fn digest_strings(list: &Bound<'_, PyList>) -> PyResult<String> {
    let (data, offsets) = pack_strings(list)?;
    Ok(format!("{:032x}", metadata::digest_packed(&data, &offsets)))
}

/// xxh3 hashes (uint64 bytes) of str keys under a seed.
#[pyfunction]
fn hash_keys<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyList>,
    seed: u64,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (data, offsets) = pack_strings(keys)?;
    hash_offsets(py, &data, &offsets, seed)
}

/// xxh3 hashes of keys packed as bytes plus int64 offsets.
#[pyfunction]
fn hash_keys_packed<'py>(
    py: Python<'py>,
    data: PyBuffer<u8>,
    offsets: PyBuffer<i64>,
    seed: u64,
) -> PyResult<Bound<'py, PyByteArray>> {
    hash_offsets(py, as_slice(&data)?, as_slice(&offsets)?, seed)
}

fn hash_offsets<'py>(
    py: Python<'py>,
    data: &[u8],
    offsets: &[i64],
    seed: u64,
) -> PyResult<Bound<'py, PyByteArray>> {
    let packed = Packed::new(data, offsets).map_err(|e| to_py(py, e))?;
    let hashes: Vec<u64> = py.detach(|| {
        (0..offsets.len() - 1)
            .map(|i| sample::key_hash(seed, metaclip_core::matcher::Texts::get(&packed, i)))
            .collect()
    });
    Ok(bytes_of(py, &hashes))
}

/// The coin in [0, 1) for (seed, key, entry, epoch) — spec §6.
#[pyfunction]
#[pyo3(signature = (seed, key, entry, epoch = 0))]
fn coin(seed: u64, key: &str, entry: u32, epoch: u32) -> f64 {
    sample::coin(sample::key_hash(seed, key.as_bytes()), entry, epoch)
}

/// MC1 keep flags (uint8 bytes) per text.
#[pyfunction]
#[pyo3(signature = (key_hashes, offsets, ids, probs, epoch = 0, threads = 0))]
fn sample_pairs<'py>(
    py: Python<'py>,
    key_hashes: PyBuffer<u64>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    probs: PyBuffer<f64>,
    epoch: u32,
    threads: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (k, o, i, p) = (
        as_slice(&key_hashes)?,
        as_slice(&offsets)?,
        as_slice(&ids)?,
        as_slice(&probs)?,
    );
    let keep = py
        .detach(|| sample::sample_pairs(k, o, i, p, epoch, threads))
        .map_err(|e| to_py(py, e))?;
    let keep: Vec<u8> = keep.into_iter().map(u8::from).collect();
    Ok(PyByteArray::new(py, &keep))
}

/// The CSR rows whose `keep` byte is set: (offsets int64 bytes, ids uint32 bytes), in
/// buffers from `alloc(nbytes)` when given (see `output`).
#[pyfunction]
#[pyo3(signature = (offsets, ids, keep, alloc = None))]
fn select_rows<'py>(
    py: Python<'py>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    keep: PyBuffer<u8>,
    alloc: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (o, i, k) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&keep)?);
    let kept = count::kept_ranges(o, i, k).map_err(|e| to_py(py, e))?;
    let (rows, n_ids) = kept.clone().fold((0, 0), |(r, n), x| (r + 1, n + x.len()));
    // Straight from the input rows into the output buffers.
    let offsets = output(py, alloc, (rows + 1) * 8, |out| {
        let mut at = 0i64;
        let mut slots = out.chunks_exact_mut(8);
        if let Some(first) = slots.next() {
            first.copy_from_slice(&at.to_le_bytes());
        }
        for (slot, r) in slots.zip(kept.clone()) {
            at += r.len() as i64;
            slot.copy_from_slice(&at.to_le_bytes());
        }
    })?;
    let ids = output(py, alloc, n_ids * 4, |out| {
        let mut at = 0;
        for r in kept {
            let raw = raw_bytes(&i[r]);
            out[at..at + raw.len()].copy_from_slice(raw);
            at += raw.len();
        }
    })?;
    Ok((offsets, ids))
}

/// 1 − Π(1 − p) per CSR row (float64 bytes); 0 for rows without ids.
#[pyfunction]
#[pyo3(signature = (offsets, ids, probs, threads = 0))]
fn keep_probability<'py>(
    py: Python<'py>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    probs: PyBuffer<f64>,
    threads: usize,
) -> PyResult<Bound<'py, PyByteArray>> {
    let (o, i, p) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&probs)?);
    let kp = py
        .detach(|| sample::keep_probability(o, i, p, threads))
        .map_err(|e| to_py(py, e))?;
    Ok(bytes_of(py, &kp))
}

/// MC2 image-level sampling: (keep uint8 bytes, picked text row int64 bytes) per image.
#[pyfunction]
#[pyo3(signature = (key_hashes, image_offsets, offsets, ids, probs, epoch = 0, threads = 0))]
#[allow(clippy::too_many_arguments)]
fn sample_images<'py>(
    py: Python<'py>,
    key_hashes: PyBuffer<u64>,
    image_offsets: PyBuffer<i64>,
    offsets: PyBuffer<i64>,
    ids: PyBuffer<u32>,
    probs: PyBuffer<f64>,
    epoch: u32,
    threads: usize,
) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyByteArray>)> {
    let k = as_slice(&key_hashes)?;
    let io = as_slice(&image_offsets)?;
    let (o, i, p) = (as_slice(&offsets)?, as_slice(&ids)?, as_slice(&probs)?);
    let (keep, picked) = py
        .detach(|| sample::sample_images(k, io, o, i, p, epoch, threads))
        .map_err(|e| to_py(py, e))?;
    let keep: Vec<u8> = keep.into_iter().map(u8::from).collect();
    Ok((PyByteArray::new(py, &keep), bytes_of(py, &picked)))
}

/// Load a JSON list of strings (MC1 `metadata.json`); duplicates raise MetadataError.
#[pyfunction]
fn load_metadata_json(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
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
fn load_metadata_lines(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
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
/// image member names), or None when the tar must be read member by member.
#[pyfunction]
fn tar_json_lines<'py>(py: Python<'py>, path: PathBuf, key_field: &str) -> TarJsonLines<'py> {
    let got = py.detach(|| tar_json::tar_json(&path, key_field))?;
    let (stems, names) = got.images.into_iter().unzip();
    Some((
        PyBytes::new(py, &got.lines),
        got.rows,
        got.first_fields,
        stems,
        names,
    ))
}

type TarJsonLines<'py> = Option<(Bound<'py, PyBytes>, usize, usize, Vec<String>, Vec<String>)>;

/// Raise MetadataError naming duplicate entries, if any.
#[pyfunction]
fn check_unique(py: Python<'_>, entries: Vec<PyBackedStr>) -> PyResult<()> {
    py.detach(|| metadata::check_unique(&entries))
        .map_err(|e| to_py(py, e))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Matcher>()?;
    m.add_function(wrap_pyfunction!(spaced, m)?)?;
    m.add_function(wrap_pyfunction!(is_cjk_like, m)?)?;
    m.add_function(wrap_pyfunction!(count_ids, m)?)?;
    m.add_function(wrap_pyfunction!(count_rows, m)?)?;
    m.add_function(wrap_pyfunction!(count_sparse, m)?)?;
    m.add_function(wrap_pyfunction!(probabilities, m)?)?;
    m.add_function(wrap_pyfunction!(tail_mass, m)?)?;
    m.add_function(wrap_pyfunction!(threshold_for_tail, m)?)?;
    m.add_function(wrap_pyfunction!(hash_keys, m)?)?;
    m.add_function(wrap_pyfunction!(digest_strings, m)?)?;
    m.add_function(wrap_pyfunction!(hash_keys_packed, m)?)?;
    m.add_function(wrap_pyfunction!(coin, m)?)?;
    m.add_function(wrap_pyfunction!(sample_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(sample_images, m)?)?;
    m.add_function(wrap_pyfunction!(keep_probability, m)?)?;
    m.add_function(wrap_pyfunction!(select_rows, m)?)?;
    m.add_function(wrap_pyfunction!(load_metadata_json, m)?)?;
    m.add_function(wrap_pyfunction!(load_metadata_lines, m)?)?;
    m.add_function(wrap_pyfunction!(check_unique, m)?)?;
    m.add_function(wrap_pyfunction!(tar_json_lines, m)?)?;
    m.add("MAX_ENTRIES", matcher::MAX_ENTRIES)?;
    lid::register(m)?;
    ngram::register(m)?;
    Ok(())
}
