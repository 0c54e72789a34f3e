//! A native reader and predictor for fastText supervised models (`.bin` and quantized `.ftz`).
//!
//! Written from the file layout of fastText 0.9 (version 12): header arguments, dictionary,
//! optional prune index, input matrix (dense or product-quantized with quantized norms) and
//! output matrix (dense or quantized). Prediction follows fastText's `predict` for one line
//! (the text plus the end-of-sentence token), top-1 only, with hierarchical-softmax or
//! softmax loss. Speed comes from work done once at load time:
//! - every input row is dequantized once (f32, `dim` floats);
//! - each vocabulary word's vector sum (word row + its character n-gram rows) is precomputed,
//!   so an in-vocabulary word costs one row add;
//! - the prune index (bucket id → row) becomes a bitmap with rank counts, so the usual case,
//!   an n-gram whose bucket has no row, is one bit test (a sorted id list instead when the
//!   bitmap would be bigger than the file);
//! - `hash % bucket` uses a multiply instead of a division.
//!
//! Floating-point sums are grouped differently from fastText's, so probabilities agree to
//! about 1e-6 and the top label differs only on near-ties.
//!
//! `format` reads and checks the file; `model` lays it out for prediction and predicts.
//! A corrupt or crafted file is an [`Error::Model`] naming it, never a panic or an
//! allocation out of proportion to its size (bounds in `format`'s doc; `tests/fuzz_lid.rs`
//! and `bench/fuzz_lid.py` fuzz it with mutants of lid.176.ftz).

mod format;
mod model;
#[cfg(test)]
mod tests;

pub use self::model::{Model, Scratch};

use crate::{Error, Result};

const MAGIC: i32 = 793_712_314;
const VERSION: i32 = 12;
const EOS: &[u8] = b"</s>";
const LABEL_PREFIX: &[u8] = b"__label__";

impl Model {
    /// Read a model file.
    pub fn load(path: &std::path::Path) -> Result<Model> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|e| Error::io(&shown, e))?;
        Model::from_bytes(&data, &shown)
    }

    /// Parse a model from its bytes (`name` is used in error messages).
    pub fn from_bytes(data: &[u8], name: &str) -> Result<Model> {
        Ok(Model::new(format::parse(data, name)?))
    }
}
