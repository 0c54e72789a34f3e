//! Bindings for language identification (`metaclip_core::lid`); the typed API is
//! `metaclip.lid`.

use std::path::PathBuf;

use metaclip_core::lid::{self, fasttext, Backend, Identified, Mapping, Options};
use metaclip_core::texts::Packed;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList};

use crate::buffers::{as_slice, bytes_of, in_chunks, pack_strings};
use crate::error::to_py;

/// A language identifier: backend + mapping + threshold.
#[pyclass(frozen, module = "metaclip._core")]
pub struct LanguageIdentifier {
    inner: lid::Identifier,
}

type LangConf<'py> = (Bound<'py, PyByteArray>, Bound<'py, PyByteArray>);

impl LanguageIdentifier {
    fn run<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        offsets: &[i64],
        threads: usize,
    ) -> PyResult<LangConf<'py>> {
        let packed = Packed::new(data, offsets).map_err(|e| to_py(py, e))?;
        let n = offsets.len() - 1;
        let mut all = Identified::default();
        let work = |range| self.inner.identify_batch(&packed, range, threads);
        in_chunks(py, n, work, |part| {
            all.lang.extend_from_slice(&part.lang);
            all.conf.extend_from_slice(&part.conf);
        })?;
        Ok((bytes_of(py, &all.lang), bytes_of(py, &all.conf)))
    }
}

#[pymethods]
impl LanguageIdentifier {
    #[new]
    #[pyo3(signature = (backend, model_path = None, mapping_path = None, mapping_pairs = None,
                        threshold = 0.0, script_shortcut = true))]
    fn new(
        py: Python<'_>,
        backend: &str,
        model_path: Option<PathBuf>,
        mapping_path: Option<PathBuf>,
        mapping_pairs: Option<Vec<(String, String)>>,
        threshold: f32,
        script_shortcut: bool,
    ) -> PyResult<Self> {
        let build = || -> metaclip_core::Result<lid::Identifier> {
            let backend = Backend::open(backend, model_path.as_deref())?;
            let mapping = Mapping::from_path_or_pairs(mapping_path.as_deref(), mapping_pairs)?;
            let options = Options {
                threshold,
                script_shortcut,
            };
            lid::Identifier::new(backend, mapping, options)
        };
        let inner = py.detach(build).map_err(|e| to_py(py, e))?;
        Ok(LanguageIdentifier { inner })
    }

    #[getter]
    fn languages(&self) -> Vec<String> {
        self.inner.languages().to_vec()
    }

    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend().name()
    }

    #[getter]
    fn codes(&self) -> Vec<String> {
        self.inner.backend().codes()
    }

    #[getter]
    fn threshold(&self) -> f32 {
        self.inner.options().threshold
    }

    #[getter]
    fn script_shortcut(&self) -> bool {
        self.inner.options().script_shortcut
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    fn mapping_pairs(&self) -> Vec<(String, String)> {
        let m = self.inner.mapping();
        m.pairs()
            .map(|(c, l)| (c.to_string(), l.to_string()))
            .collect()
    }

    /// Backend code and confidence of one text before mapping/threshold (None: no letters).
    fn raw(&self, text: &str) -> Option<(String, f32)> {
        self.inner
            .raw(text.as_bytes(), &mut fasttext::Scratch::default())
    }

    /// Identify a list of str. Returns (lang int16, conf float32) as bytes.
    #[pyo3(signature = (texts, threads = 0))]
    fn identify_list<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        threads: usize,
    ) -> PyResult<LangConf<'py>> {
        let (data, offsets) = pack_strings(texts)?;
        self.run(py, &data, &offsets, threads)
    }

    /// Identify texts packed as UTF-8 bytes plus int64 offsets (an Arrow string column).
    #[pyo3(signature = (data, offsets, threads = 0))]
    fn identify_packed<'py>(
        &self,
        py: Python<'py>,
        data: PyBuffer<u8>,
        offsets: PyBuffer<i64>,
        threads: usize,
    ) -> PyResult<LangConf<'py>> {
        self.run(py, as_slice(&data)?, as_slice(&offsets)?, threads)
    }

    /// Map codes packed like texts (an existing language column) to language indices.
    fn map_codes_packed<'py>(
        &self,
        py: Python<'py>,
        data: PyBuffer<u8>,
        offsets: PyBuffer<i64>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let packed =
            Packed::new(as_slice(&data)?, as_slice(&offsets)?).map_err(|e| to_py(py, e))?;
        let out = py.detach(|| self.inner.map_codes(&packed));
        Ok(bytes_of(py, &out))
    }
}

/// The built-in LID → metadata language mapping, as TSV text.
#[pyfunction]
pub fn lid_default_mapping_tsv() -> &'static str {
    lid::mapping::DEFAULT_TSV
}

/// Parse a mapping file (TSV or .json) into (code, language) pairs, validating it.
#[pyfunction]
pub fn lid_load_mapping(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, String)>> {
    let m = Mapping::load(&path).map_err(|e| to_py(py, e))?;
    Ok(m.pairs()
        .map(|(c, l)| (c.to_string(), l.to_string()))
        .collect())
}
