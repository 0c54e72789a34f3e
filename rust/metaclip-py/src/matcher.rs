//! The matcher (`metaclip_core::matcher`) and the spacing rule it applies; the typed API is
//! `metaclip.core`.

use metaclip_core::matcher::{self, Mode};
use metaclip_core::spacing;
use metaclip_core::texts::Packed;
use std::path::PathBuf;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyByteArray, PyList};

use crate::buffers::{as_slice, bytes_of, in_chunks, output, pack_strings, raw_bytes};
use crate::error::to_py;

/// A matcher built once over a metadata list (entry id = position).
#[pyclass(frozen, module = "metaclip._core")]
pub struct Matcher {
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
        let work = |range| self.inner.match_batch(&packed, range, threads);
        in_chunks(py, n, work, |part| parts.push(part))?;
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

    /// Map a matcher file written by `save` and use its tables in place. With `digest`
    /// (see `matcher_digest`), a file built from other metadata or mode is refused.
    #[staticmethod]
    #[pyo3(signature = (path, digest = None))]
    fn load(py: Python<'_>, path: PathBuf, digest: Option<&str>) -> PyResult<Self> {
        let expect = digest.map(parse_digest).transpose()?;
        let inner = py
            .detach(|| matcher::Matcher::load(&path, expect.as_ref()))
            .map_err(|e| to_py(py, e))?;
        Ok(Matcher { inner })
    }

    /// Write the matcher to `path` (atomically: a temporary file, then a rename).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path))
            .map_err(|e| to_py(py, e))
    }

    /// Hex digest of the entries and mode the matcher was built from.
    #[getter]
    fn digest(&self) -> String {
        matcher::digest_hex(&self.inner.digest())
    }

    /// Whether the tables are used in place from a file mapping.
    #[getter]
    fn mapped(&self) -> bool {
        self.inner.is_mapped()
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

    /// Bytes of the substring automaton's tables (used in place by a loaded matcher).
    fn automaton_bytes(&self) -> usize {
        self.inner.automaton_bytes()
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
pub fn spaced(text: &str, fixed: bool) -> String {
    let mut out = Vec::new();
    spacing::spaced_into(text, fixed, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[pyfunction]
pub fn is_cjk_like(c: char) -> bool {
    matcher::is_cjk_like(c)
}

/// Hex digest a matcher file over `entries` in `mode` must carry (see `Matcher.load`).
#[pyfunction]
#[pyo3(signature = (entries, mode = "mc1"))]
pub fn matcher_digest(py: Python<'_>, entries: Vec<PyBackedStr>, mode: &str) -> PyResult<String> {
    let mode = Mode::parse(mode).map_err(|e| to_py(py, e))?;
    Ok(py.detach(|| matcher::digest_hex(&matcher::metadata_digest(&entries, mode))))
}

fn parse_digest(hex: &str) -> PyResult<[u8; 16]> {
    let bad = || PyValueError::new_err(format!("not a 32-digit hex digest: {hex:?}"));
    let mut out = [0u8; 16];
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}
