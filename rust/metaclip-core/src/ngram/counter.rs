//! Streaming unigram/bigram counter with exact counts in bounded memory. (~460 lines: the
//! counting, spilling decision and the queries over merged runs are one state machine;
//! the vocabulary and the run files are in `vocab.rs` and `spill.rs`.)
//!
//! Words are interned once (an arena of bytes + a `HashTable<u32>` of ids), so a unigram
//! count is a `u64` in a vector and a bigram is a `u64` key `(id_a << 32) | id_b`.
//!
//! **Memory bound.** Bigrams live in a hash map that may hold at most `bigram_capacity`
//! entries, derived from a byte budget (`mem_budget_bytes`, default 1 GiB) so that the map
//! (17 B per bucket, ≤ 7/8 full) plus the sorted vector it is drained into at a spill (16 B
//! per entry) stay within the budget. When the map is full it is drained, sorted by key and
//! written as a *run* file (delta + LEB128 varints, typically 3–5 B per bigram) into a
//! private spill directory that is removed on drop. Queries merge the runs (k-way heap
//! merge), summing the counts of equal keys, so counts are **exact**: nothing is pruned.
//! The vocabulary (all distinct words, ~`len + 8 + 8 + 5` bytes per word) and the unigram
//! counts are always in memory; they are not bounded by the budget. Disk use is bounded by
//! the number of distinct bigrams per run, summed over runs.
//!
//! The parts: [`Vocab`] interns the words; `spill` writes and merges
//! the runs.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use foldhash::fast::FixedState;
use hashbrown::HashMap;

use super::spill::{merge_sorted, Runs};
use super::tokenize::{for_each_token, strip_html, TokenMode};
use super::vocab::Vocab;
use super::{pmi, pmi_passes};
use crate::{Error, Result};

/// Default memory budget of the bigram table: 1 GiB.
pub const DEFAULT_MEM_BUDGET: u64 = 1 << 30;

/// Counter options.
#[derive(Clone, Debug)]
pub struct CounterConfig {
    /// Tokenizer mode.
    pub mode: TokenMode,
    /// Drop "weird" tokens (reference rule for languages written without spaces).
    pub no_space: bool,
    /// Remove HTML tags (`<...>`, `&lt;...&gt;`) from each line first, as the reference does.
    pub strip_html: bool,
    /// Byte budget of the in-memory bigram table (see module docs).
    pub mem_budget_bytes: u64,
    /// Where the spill directory is created (default: the system temp directory).
    pub spill_dir: Option<PathBuf>,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self {
            mode: TokenMode::Simple,
            no_space: false,
            strip_html: true,
            mem_budget_bytes: DEFAULT_MEM_BUDGET,
            spill_dir: None,
        }
    }
}

/// Maximum number of in-memory bigram entries for a byte budget: the largest `7/8 · 2^k`
/// with `2^k · 32 ≤ budget` (17 B/bucket for the table + 16 B/entry for the spill vector,
/// rounded up), and at least 1,024.
pub fn bigram_capacity(mem_budget_bytes: u64) -> usize {
    let buckets = (mem_budget_bytes / 32).max(1);
    let pow = 1u64 << (63 - buckets.leading_zeros());
    let cap = pow / 8 * 7;
    usize::try_from(cap.max(1024)).unwrap_or(usize::MAX)
}

/// Statistics about a counter, for progress reports and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterStats {
    /// Lines fed.
    pub lines: u64,
    /// Bytes of text fed (after decompression).
    pub bytes: u64,
    /// Sum of unigram counts (`N` in the PMI formula).
    pub total_tokens: u64,
    /// Distinct words.
    pub distinct_unigrams: u64,
    /// Bigram entries currently in the hash map.
    pub bigrams_in_memory: u64,
    /// Run files spilled to disk so far.
    pub runs: u64,
    /// Bytes written to spill files so far.
    pub spilled_bytes: u64,
}

/// A bigram selected by PMI.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredBigram {
    /// First word.
    pub first: String,
    /// Second word.
    pub second: String,
    /// Bigram count.
    pub count: u64,
    /// `log2(count · N / (count(first) · count(second)))`.
    pub pmi: f64,
}

/// Which bigrams [`NgramCounter::bigrams_by_pmi`] returns.
#[derive(Clone, Copy, Debug)]
pub struct PmiSelect {
    /// PMI threshold (log2 scale, see [`pmi`]).
    pub threshold: f64,
    /// `true`: PMI ≥ threshold (MC1); `false`: PMI > threshold (MC2).
    pub inclusive: bool,
    /// Minimum bigram count.
    pub min_count: u64,
    /// Keep only the best `top_k` (PMI descending, then code points ascending).
    pub top_k: Option<usize>,
}

/// Result of a PMI selection.
#[derive(Clone, Debug, Default)]
pub struct PmiSelection {
    /// Selected bigrams, best first.
    pub bigrams: Vec<ScoredBigram>,
    /// Distinct bigrams counted.
    pub distinct_bigrams: u64,
    /// Bigrams that passed threshold and min_count (before `top_k`).
    pub passed: u64,
    /// Bigrams skipped because a word had no unigram count (count files only).
    pub missing_unigram: u64,
}

/// Streaming n-gram counter (see module docs).
pub struct NgramCounter {
    cfg: CounterConfig,
    cap: usize,
    vocab: Vocab,
    unigram: Vec<u64>,
    total_tokens: u64,
    bigrams: HashMap<u64, u64, FixedState>,
    /// Sorted, deduplicated bigrams flushed from the map by a query.
    mem_run: Vec<(u64, u64)>,
    /// Runs spilled to disk.
    runs: Runs,
    lines: u64,
    bytes: u64,
    html_buf: String,
}

#[inline]
fn key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

#[inline]
fn unkey(k: u64) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

impl NgramCounter {
    /// A new, empty counter.
    pub fn new(cfg: CounterConfig) -> Self {
        let cap = bigram_capacity(cfg.mem_budget_bytes);
        Self {
            cfg,
            cap,
            vocab: Vocab::default(),
            unigram: Vec::new(),
            total_tokens: 0,
            bigrams: HashMap::with_hasher(FixedState::default()),
            mem_run: Vec::new(),
            runs: Runs::default(),
            lines: 0,
            bytes: 0,
            html_buf: String::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CounterConfig {
        &self.cfg
    }

    /// Maximum number of bigram entries held in memory before a spill.
    pub fn bigram_capacity(&self) -> usize {
        self.cap
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Count of a word (0 if never seen).
    pub fn unigram_count(&self, w: &str) -> u64 {
        self.vocab
            .lookup(w)
            .map_or(0, |id| self.unigram[id as usize])
    }

    /// Current statistics.
    pub fn stats(&self) -> CounterStats {
        CounterStats {
            lines: self.lines,
            bytes: self.bytes,
            total_tokens: self.total_tokens,
            distinct_unigrams: self.vocab.len() as u64,
            bigrams_in_memory: self.bigrams.len() as u64,
            runs: self.runs.len() as u64,
            spilled_bytes: self.runs.spilled_bytes(),
        }
    }

    #[inline]
    fn id(&mut self, w: &str) -> Result<u32> {
        let id = self.vocab.intern(w)?;
        if id as usize == self.unigram.len() {
            self.unigram.push(0);
        }
        Ok(id)
    }

    /// Count one line of text (a bigram never spans two calls).
    pub fn add_line(&mut self, line: &str) -> Result<()> {
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        let mut buf = std::mem::take(&mut self.html_buf);
        let text = if self.cfg.strip_html {
            strip_html(line, &mut buf)
        } else {
            line
        };
        let (mode, no_space) = (self.cfg.mode, self.cfg.no_space);
        let mut prev: Option<u32> = None;
        let mut err: Option<Error> = None;
        for_each_token(text, mode, no_space, |tok| {
            let Some(tok) = tok else {
                prev = None;
                return;
            };
            if err.is_some() {
                return;
            }
            match self.id(tok) {
                Ok(id) => {
                    self.unigram[id as usize] += 1;
                    self.total_tokens += 1;
                    if let Some(p) = prev {
                        *self.bigrams.entry(key(p, id)).or_insert(0) += 1;
                    }
                    prev = Some(id);
                }
                Err(e) => err = Some(e),
            }
        });
        self.html_buf = buf;
        if let Some(e) = err {
            return Err(e);
        }
        self.maybe_spill()
    }

    /// Count a text that may hold several lines.
    pub fn add_text(&mut self, text: &str) -> Result<()> {
        for line in text.lines() {
            self.add_line(line)?;
        }
        Ok(())
    }

    /// Add `count` to a word (precomputed unigram counts).
    pub fn add_unigram_count(&mut self, w: &str, count: u64) -> Result<()> {
        let id = self.id(w)?;
        self.unigram[id as usize] += count;
        self.total_tokens += count;
        Ok(())
    }

    /// Add `count` to a bigram (precomputed bigram counts; unigram counts are not changed).
    pub fn add_bigram_count(&mut self, a: &str, b: &str, count: u64) -> Result<()> {
        let ia = self.id(a)?;
        let ib = self.id(b)?;
        *self.bigrams.entry(key(ia, ib)).or_insert(0) += count;
        self.maybe_spill()
    }

    fn maybe_spill(&mut self) -> Result<()> {
        if self.bigrams.len() >= self.cap {
            let mut v: Vec<(u64, u64)> = self.bigrams.drain().collect();
            v.sort_unstable_by_key(|p| p.0);
            self.write_run(&v)?;
        }
        Ok(())
    }

    fn write_run(&mut self, sorted: &[(u64, u64)]) -> Result<()> {
        self.runs.write(sorted, self.cfg.spill_dir.as_deref())
    }

    /// Move the hash map into the sorted in-memory run (or to disk if runs exist or it is
    /// larger than the capacity), so that iteration sees every count.
    fn seal(&mut self) -> Result<()> {
        if self.bigrams.is_empty() {
            return Ok(());
        }
        let mut v: Vec<(u64, u64)> = self.bigrams.drain().collect();
        v.sort_unstable_by_key(|p| p.0);
        if !self.runs.is_empty() {
            return self.write_run(&v);
        }
        let merged = if self.mem_run.is_empty() {
            v
        } else {
            merge_sorted(&std::mem::take(&mut self.mem_run), &v)
        };
        if merged.len() > self.cap {
            self.write_run(&merged)?;
        } else {
            self.mem_run = merged;
        }
        Ok(())
    }

    /// Visit every distinct bigram with its exact total count, in key order.
    pub fn for_each_bigram(&mut self, mut f: impl FnMut(u32, u32, u64)) -> Result<()> {
        self.seal()?;
        if self.runs.is_empty() {
            for &(k, c) in &self.mem_run {
                let (a, b) = unkey(k);
                f(a, b, c);
            }
            return Ok(());
        }
        self.runs.merge(&self.mem_run, |k, c| {
            let (a, b) = unkey(k);
            f(a, b, c);
        })
    }

    /// Exact count of one bigram (a full pass over the bigrams; for tests and tools).
    pub fn bigram_count(&mut self, a: &str, b: &str) -> Result<u64> {
        let (Some(ia), Some(ib)) = (self.vocab.lookup(a), self.vocab.lookup(b)) else {
            return Ok(0);
        };
        let want = key(ia, ib);
        let mut out = 0;
        self.for_each_bigram(|x, y, c| {
            if key(x, y) == want {
                out = c;
            }
        })?;
        Ok(out)
    }

    /// Unigrams with count ≥ `min_count`, by count descending then code points ascending;
    /// the first `top_k` if given.
    pub fn top_unigrams(&self, min_count: u64, top_k: Option<usize>) -> Vec<(String, u64)> {
        let mut ids: Vec<u32> = (0..self.unigram.len())
            .filter(|&i| self.unigram[i] >= min_count && self.unigram[i] > 0)
            .map(|i| i as u32)
            .collect();
        let cmp = |a: &u32, b: &u32| {
            self.unigram[*b as usize]
                .cmp(&self.unigram[*a as usize])
                .then_with(|| self.vocab.get(*a).cmp(self.vocab.get(*b)))
        };
        if let Some(k) = top_k {
            if k < ids.len() {
                if k == 0 {
                    ids.clear();
                } else {
                    ids.select_nth_unstable_by(k - 1, cmp);
                    ids.truncate(k);
                }
            }
        }
        ids.sort_unstable_by(cmp);
        ids.into_iter()
            .map(|i| (self.vocab.get(i).to_owned(), self.unigram[i as usize]))
            .collect()
    }

    /// Bigrams selected by PMI (see [`PmiSelect`]), best first: PMI descending, then the
    /// first word, then the second word, by code points. `N` = sum of unigram counts.
    pub fn bigrams_by_pmi(&mut self, sel: PmiSelect) -> Result<PmiSelection> {
        let n = self.total_tokens;
        let mut cands: Vec<(f64, u32, u32, u64)> = Vec::new();
        let mut distinct = 0u64;
        let mut passed = 0u64;
        let mut missing = 0u64;
        let unigram = std::mem::take(&mut self.unigram);
        let vocab = std::mem::take(&mut self.vocab);
        let cmp = |x: &(f64, u32, u32, u64), y: &(f64, u32, u32, u64)| -> Ordering {
            y.0.total_cmp(&x.0)
                .then_with(|| vocab.get(x.1).cmp(vocab.get(y.1)))
                .then_with(|| vocab.get(x.2).cmp(vocab.get(y.2)))
        };
        let res = self.for_each_bigram(|a, b, c| {
            distinct += 1;
            let (ca, cb) = (unigram[a as usize], unigram[b as usize]);
            if ca == 0 || cb == 0 {
                missing += 1;
                return;
            }
            if c < sel.min_count || !pmi_passes(c, ca, cb, n, sel.threshold, sel.inclusive) {
                return;
            }
            passed += 1;
            cands.push((pmi(c, ca, cb, n), a, b, c));
            if let Some(k) = sel.top_k {
                if cands.len() >= 2 * k.max(1024) {
                    cands.select_nth_unstable_by(k.saturating_sub(1), cmp);
                    cands.truncate(k);
                }
            }
        });
        if let Some(k) = sel.top_k {
            if k < cands.len() {
                if k == 0 {
                    cands.clear();
                } else {
                    cands.select_nth_unstable_by(k - 1, cmp);
                    cands.truncate(k);
                }
            }
        }
        cands.sort_unstable_by(cmp);
        let bigrams = cands
            .iter()
            .map(|&(p, a, b, c)| ScoredBigram {
                first: vocab.get(a).to_owned(),
                second: vocab.get(b).to_owned(),
                count: c,
                pmi: p,
            })
            .collect();
        self.unigram = unigram;
        self.vocab = vocab;
        res?;
        Ok(PmiSelection {
            bigrams,
            distinct_bigrams: distinct,
            passed,
            missing_unigram: missing,
        })
    }

    /// Count every line of a plain or gzip (`.gz`) text file. `progress(bytes)` is called
    /// about every 16 MiB; returning `false` stops with [`Error::Interrupted`].
    pub fn add_file(&mut self, path: &Path, mut progress: impl FnMut(u64) -> bool) -> Result<()> {
        let mut next_report = 16u64 << 20;
        let start = self.bytes;
        super::countfile::for_each_line(path, |_, raw| {
            let line = String::from_utf8_lossy(raw);
            self.add_line(&line)?;
            if self.bytes - start >= next_report {
                next_report += 16 << 20;
                if !progress(self.bytes - start) {
                    return Err(Error::Interrupted);
                }
            }
            Ok(())
        })
    }
}
