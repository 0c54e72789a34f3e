//! Corpus n-gram statistics for the metadata builder (spec §1).
//!
//! * [`tokenize`]: the MetaCLIP 2 reference tokenizer (`build_ngram.py`) for corpora.
//! * [`counter`]: a streaming unigram/bigram counter, exact, with a bounded in-memory
//!   bigram table that spills sorted runs to disk (`spill`); words interned in [`vocab`].
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
mod spill;
pub mod tokenize;
pub mod vocab;

pub use counter::{CounterConfig, NgramCounter, PmiSelect};
pub use countfile::{PageviewOptions, TitleCounts, TitleReadStats};
pub use tokenize::TokenMode;

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
