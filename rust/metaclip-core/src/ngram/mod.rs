//! Corpus n-gram statistics for the metadata builder (spec §1).
//!
//! * [`tokenize`]: the MetaCLIP 2 reference tokenizer (`build_ngram.py`) for corpora.
//! * [`counter`]: a streaming unigram/bigram counter, exact, with a bounded in-memory
//!   bigram table that spills sorted runs to disk.
//! * [`countfile`]: readers for precomputed `word count` / `first second count` files,
//!   `title count` files and Wikipedia pageview dumps (plain or `.gz`).
//!
//! **PMI.** We use the definition MC1's reference calls (`nltk` `BigramAssocMeasures.pmi`
//! over a `BigramCollocationFinder` built from unigram and bigram counts):
//!
//! `PMI(a, b) = log2(c(a,b) · N) − log2(c(a) · c(b))`, with `N = Σ_w c(w)` (all unigram
//! tokens). It is `log2(p(a,b) / (p(a) p(b)))` with `p(a,b) = c(a,b)/N`, `p(w) = c(w)/N`.
//! Its maximum is `log2 N` (two words seen only together), so a threshold of 30 can only be
//! passed when `N ≥ 2^30 ≈ 1.07e9` tokens, and then selects pairs with
//! `c(a)·c(b)/c(a,b) ≤ N / 2^30`. Whether a bigram passes an integer threshold is decided
//! with exact integer arithmetic (`c(a,b)·N ≥ 2^t·c(a)·c(b)`), never by rounding.

pub mod counter;
pub mod countfile;
pub mod tokenize;

use std::path::Path;

pub use counter::{
    CounterConfig, CounterStats, NgramCounter, PmiSelect, PmiSelection, ScoredBigram,
};
pub use countfile::{PageviewOptions, TitleCounts, TitleReadStats};
pub use tokenize::TokenMode;

/// Errors of the n-gram and count-file code.
#[derive(Debug, thiserror::Error)]
pub enum NgramError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of a count file is malformed.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        msg: String,
    },
    /// More than `u32::MAX - 1` distinct words.
    #[error("vocabulary is full (more than 4,294,967,294 distinct words)")]
    VocabFull,
    /// Stopped by the progress callback (e.g. Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// Anything else (a bad argument, a corrupt spill file).
    #[error("{0}")]
    Invalid(String),
}

impl NgramError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<NgramError> for crate::Error {
    fn from(e: NgramError) -> Self {
        match e {
            NgramError::Io { path, source } => crate::Error::Io { path, source },
            NgramError::Parse { path, line, msg } => crate::Error::Parse { path, line, msg },
            NgramError::Interrupted => crate::Error::Interrupted,
            e @ (NgramError::VocabFull | NgramError::Invalid(_)) => {
                crate::Error::InvalidArgument(e.to_string())
            }
        }
    }
}

/// Result type of this module.
pub type Result<T, E = NgramError> = std::result::Result<T, E>;

/// `log2(c_ab · n) − log2(c_a · c_b)` (see module docs). Products are taken in `u128` and
/// converted to `f64` once.
pub fn pmi(c_ab: u64, c_a: u64, c_b: u64, n: u64) -> f64 {
    let num = (u128::from(c_ab) * u128::from(n)) as f64;
    let den = (u128::from(c_a) * u128::from(c_b)) as f64;
    num.log2() - den.log2()
}

/// Whether `pmi(c_ab, c_a, c_b, n)` is ≥ (`inclusive`) or > `threshold`. Integer thresholds
/// in `-64..=64` are decided exactly in integers; others in floating point.
pub fn pmi_passes(c_ab: u64, c_a: u64, c_b: u64, n: u64, threshold: f64, inclusive: bool) -> bool {
    let lhs = u128::from(c_ab) * u128::from(n);
    let base = u128::from(c_a) * u128::from(c_b);
    if threshold.fract() == 0.0 && (-64.0..=64.0).contains(&threshold) {
        let t = threshold as i32;
        // compare lhs · 2^max(0,-t) with base · 2^max(0,t) without overflow
        let (l, r) = if t >= 0 {
            let t = t as u32;
            if base != 0 && base.leading_zeros() < t {
                return false; // base · 2^t ≥ 2^128 > lhs
            }
            (lhs, base << t)
        } else {
            let s = t.unsigned_abs();
            if lhs != 0 && lhs.leading_zeros() < s {
                return true; // lhs · 2^s ≥ 2^128 > base
            }
            (lhs << s, base)
        };
        return if inclusive { l >= r } else { l > r };
    }
    let p = pmi(c_ab, c_a, c_b, n);
    if inclusive {
        p >= threshold
    } else {
        p > threshold
    }
}

#[cfg(test)]
mod tests;
