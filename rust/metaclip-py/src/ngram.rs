//! Bindings for the n-gram statistics used by the metadata builder (`metaclip.metadata`).
//!
//! `NgramCounter` (streaming unigram/bigram counts, PMI selection) and `TitleCounts`
//! (title view counts from `title count` files and pageview dumps). Work runs detached
//! from the interpreter; long file reads check for Ctrl-C.

use std::path::PathBuf;

use metaclip_core::ngram::{
    self, countfile, CounterConfig, NgramCounter as CoreCounter, PageviewOptions, PmiSelect,
    TitleCounts as CoreTitles, TitleReadStats, TokenMode,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::to_py;

/// `(first, second, count, pmi)`.
type BigramRow = (String, String, u64, f64);

/// Streaming unigram/bigram counter with exact counts and a bounded bigram table.
#[pyclass(module = "metaclip._core")]
pub struct NgramCounter {
    inner: CoreCounter,
}

#[pymethods]
impl NgramCounter {
    #[new]
    #[pyo3(signature = (*, mode = "simple", no_space = false, strip_html = true,
        mem_budget_bytes = ngram::counter::DEFAULT_MEM_BUDGET, spill_dir = None))]
    fn new(
        py: Python<'_>,
        mode: &str,
        no_space: bool,
        strip_html: bool,
        mem_budget_bytes: u64,
        spill_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mode = TokenMode::parse(mode).map_err(|e| to_py(py, e))?;
        Ok(Self {
            inner: CoreCounter::new(CounterConfig {
                mode,
                no_space,
                strip_html,
                mem_budget_bytes,
                spill_dir,
            }),
        })
    }

    /// Count texts (each may hold several lines; a bigram never spans a line break).
    fn add_texts(&mut self, py: Python<'_>, texts: Vec<String>) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| texts.iter().try_for_each(|t| inner.add_text(t)))
            .map_err(|e| to_py(py, e))
    }

    /// Count every line of a plain or `.gz` text file.
    fn add_file(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| inner.add_file(&path, |_| Python::attach(|py| py.check_signals().is_ok())))
            .map_err(|e| to_py(py, e))
    }

    /// Load `word count` lines; returns the number of lines loaded.
    fn load_unigram_counts(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<u64> {
        let inner = &mut self.inner;
        py.detach(|| countfile::load_unigram_counts(inner, &path))
            .map_err(|e| to_py(py, e))
    }

    /// Load `first second count` lines; returns the number of lines loaded.
    fn load_bigram_counts(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<u64> {
        let inner = &mut self.inner;
        py.detach(|| countfile::load_bigram_counts(inner, &path))
            .map_err(|e| to_py(py, e))
    }

    /// Unigrams with count ≥ min_count, by count desc then code points; first top_k.
    #[pyo3(signature = (min_count = 1, top_k = None))]
    fn top_unigrams(
        &self,
        py: Python<'_>,
        min_count: u64,
        top_k: Option<usize>,
    ) -> Vec<(String, u64)> {
        let inner = &self.inner;
        py.detach(|| inner.top_unigrams(min_count, top_k))
    }

    /// Bigrams by PMI (log2; N = sum of unigram counts), best first, and selection stats.
    #[pyo3(signature = (threshold, inclusive = true, min_count = 1, top_k = None))]
    fn bigrams_by_pmi<'py>(
        &mut self,
        py: Python<'py>,
        threshold: f64,
        inclusive: bool,
        min_count: u64,
        top_k: Option<usize>,
    ) -> PyResult<(Vec<BigramRow>, Bound<'py, PyDict>)> {
        let inner = &mut self.inner;
        let sel = py
            .detach(|| {
                inner.bigrams_by_pmi(PmiSelect {
                    threshold,
                    inclusive,
                    min_count,
                    top_k,
                })
            })
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        d.set_item("distinct_bigrams", sel.distinct_bigrams)?;
        d.set_item("passed", sel.passed)?;
        d.set_item("missing_unigram", sel.missing_unigram)?;
        let rows = sel
            .bigrams
            .into_iter()
            .map(|b| (b.first, b.second, b.count, b.pmi))
            .collect();
        Ok((rows, d))
    }

    /// Count of one word.
    fn unigram_count(&self, word: &str) -> u64 {
        self.inner.unigram_count(word)
    }

    /// Exact count of one bigram (a full pass; for tests and tools).
    fn bigram_count(&mut self, py: Python<'_>, first: &str, second: &str) -> PyResult<u64> {
        let inner = &mut self.inner;
        py.detach(|| inner.bigram_count(first, second))
            .map_err(|e| to_py(py, e))
    }

    /// Maximum bigram entries kept in memory before a spill to disk.
    #[getter]
    fn bigram_capacity(&self) -> usize {
        self.inner.bigram_capacity()
    }

    /// Counters: lines, bytes, total_tokens, distinct_unigrams, bigrams_in_memory, runs,
    /// spilled_bytes, vocab_bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("lines", s.lines)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("total_tokens", s.total_tokens)?;
        d.set_item("distinct_unigrams", s.distinct_unigrams)?;
        d.set_item("bigrams_in_memory", s.bigrams_in_memory)?;
        d.set_item("runs", s.runs)?;
        d.set_item("spilled_bytes", s.spilled_bytes)?;
        d.set_item("vocab_bytes", self.inner.vocab().heap_bytes())?;
        Ok(d)
    }
}

fn read_stats<'py>(py: Python<'py>, s: TitleReadStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("lines", s.lines)?;
    d.set_item("kept", s.kept)?;
    d.set_item("dropped", s.dropped)?;
    d.set_item("skipped", s.skipped)?;
    Ok(d)
}

/// Title view counts per language (`_` → space, titles with `:` dropped).
#[pyclass(module = "metaclip._core")]
#[derive(Default)]
pub struct TitleCounts {
    inner: CoreTitles,
}

#[pymethods]
impl TitleCounts {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Add views to one title; returns False if the title is dropped.
    fn add(&mut self, lang: &str, title: &str, views: u64) -> bool {
        self.inner.add(lang, title, views)
    }

    /// Read `title count` lines for `lang`.
    fn load_title_counts<'py>(
        &mut self,
        py: Python<'py>,
        lang: &str,
        path: PathBuf,
    ) -> PyResult<Bound<'py, PyDict>> {
        let inner = &mut self.inner;
        let st = py
            .detach(|| inner.load_title_counts(lang, &path))
            .map_err(|e| to_py(py, e))?;
        read_stats(py, st)
    }

    /// Read a pageview dump (`project title views bytes`).
    #[pyo3(signature = (path, *, min_line_views = 1, include_mobile = true, langs = None))]
    fn load_pageviews<'py>(
        &mut self,
        py: Python<'py>,
        path: PathBuf,
        min_line_views: u64,
        include_mobile: bool,
        langs: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opt = PageviewOptions {
            min_line_views,
            include_mobile,
            langs: langs.unwrap_or_default(),
        };
        let inner = &mut self.inner;
        let st = py
            .detach(|| inner.load_pageviews(&path, &opt))
            .map_err(|e| to_py(py, e))?;
        read_stats(py, st)
    }

    /// Languages with titles, sorted.
    fn langs(&self) -> Vec<String> {
        self.inner.langs()
    }

    /// Number of distinct titles of a language.
    fn count(&self, lang: &str) -> usize {
        self.inner.len(lang)
    }

    /// Titles with views ≥ min_views, by views desc then code points; first top_k.
    #[pyo3(signature = (lang, min_views = 0, top_k = None))]
    fn top(&self, lang: &str, min_views: u64, top_k: Option<usize>) -> Vec<(String, u64)> {
        self.inner.top(lang, min_views, top_k)
    }
}

/// `log2(c_ab · n) − log2(c_a · c_b)`.
#[pyfunction]
pub fn ngram_pmi(c_ab: u64, c_a: u64, c_b: u64, n: u64) -> f64 {
    ngram::pmi(c_ab, c_a, c_b, n)
}

/// Whether the PMI passes `threshold` (≥ if inclusive, else >); exact for integer thresholds.
#[pyfunction]
#[pyo3(signature = (c_ab, c_a, c_b, n, threshold, inclusive = true))]
pub fn ngram_pmi_passes(
    c_ab: u64,
    c_a: u64,
    c_b: u64,
    n: u64,
    threshold: f64,
    inclusive: bool,
) -> bool {
    ngram::pmi_passes(c_ab, c_a, c_b, n, threshold, inclusive)
}
