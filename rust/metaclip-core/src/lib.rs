//! metaclip-core: the MetaCLIP curation engine in pure Rust.
//!
//! Matching (spec §2), counting (§4), thresholds (§5) and deterministic sampling (§6), plus
//! the n-gram statistics used to build metadata (§1). No Python here: the `metaclip-py`
//! crate is a thin binding over this one.

#![warn(missing_docs)]

pub mod count;
pub mod dedup;
pub mod error;
pub mod flat;
pub mod lid;
pub mod mapped;
pub mod matcher;
pub mod metadata;
pub mod ngram;
pub mod pool;
pub mod sample;
pub mod spacing;
pub mod tar_json;
pub mod texts;
pub mod threshold;

pub use error::{Error, Result};
