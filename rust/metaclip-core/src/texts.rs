//! Batches of texts as the matcher and the language identifier read them, and the CSR
//! form of per-text entry ids the matcher returns.

use crate::error::{Error, Result};

/// A random-access batch of texts as raw bytes (UTF-8 is checked while matching).
pub trait Texts: Sync {
    /// Number of texts.
    fn len(&self) -> usize;
    /// The bytes of text `i` (`i < len()`).
    fn get(&self, i: usize) -> &[u8];
    /// True when there are no texts.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: AsRef<str> + Sync> Texts for [S] {
    fn len(&self) -> usize {
        <[S]>::len(self)
    }
    fn get(&self, i: usize) -> &[u8] {
        self[i].as_ref().as_bytes()
    }
}

/// Texts laid out as in an Arrow string column: one byte buffer and `n + 1` offsets.
pub struct Packed<'a> {
    /// The bytes of every text, one after the other.
    pub data: &'a [u8],
    /// Text `i` is `data[offsets[i]..offsets[i + 1]]`.
    pub offsets: &'a [i64],
}

impl<'a> Packed<'a> {
    /// Check the offsets (at least one, non-decreasing, within `data`) and wrap them.
    pub fn new(data: &'a [u8], offsets: &'a [i64]) -> Result<Self> {
        if offsets.is_empty() {
            return Err(Error::invalid("offsets must have n + 1 elements"));
        }
        let mut prev = offsets[0];
        for &o in offsets {
            if o < prev || o as u64 > data.len() as u64 {
                return Err(Error::invalid(
                    "offsets must be non-decreasing and within the data buffer",
                ));
            }
            prev = o;
        }
        Ok(Packed { data, offsets })
    }
}

impl Texts for Packed<'_> {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// Matched entry ids of many texts in CSR form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Csr {
    /// `offsets[i]..offsets[i+1]` indexes `ids` for text i; `offsets[0] == 0`.
    pub offsets: Vec<i64>,
    /// Sorted, unique entry ids per text.
    pub ids: Vec<u32>,
    /// Indices (within the batch) of texts that were not valid UTF-8; they match nothing.
    pub invalid: Vec<u64>,
}
