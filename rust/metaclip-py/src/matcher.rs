//! The matcher (`metaclip_core::matcher`) and the spacing rule it applies; the typed API is
//! `metaclip.core`.

use metaclip_core::matcher::{self, Mode};
use metaclip_core::spacing;
use metaclip_core::texts::Packed;
use pyo3::buffer::PyBuffer;
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
pub fn spaced(text: &str, fixed: bool) -> String {
    let mut out = Vec::new();
    spacing::spaced_into(text, fixed, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[pyfunction]
pub fn is_cjk_like(c: char) -> bool {
    matcher::is_cjk_like(c)
}
