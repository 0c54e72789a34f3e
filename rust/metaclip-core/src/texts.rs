//! Batches of texts as the matcher and the language identifier read them, and the CSR
//! form of per-text entry ids the matcher returns.

use crate::error::{Error, Result};

/// A random-access batch of texts as raw bytes (UTF-8 is checked while matching).
///
/// # Safety
///
/// [`Texts::all_utf8`] may return true only when every text of the range is valid UTF-8:
/// the matcher then reads them as `str` unchecked.
pub unsafe trait Texts: Sync {
    /// Number of texts.
    fn len(&self) -> usize;
    /// The bytes of text `i` (`i < len()`).
    fn get(&self, i: usize) -> &[u8];
    /// True when there are no texts.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True when every text in `range` is known to be valid UTF-8, so the matcher need
    /// not check them one by one (false: each is checked).
    fn all_utf8(&self, range: std::ops::Range<usize>) -> bool {
        let _ = range;
        false
    }
}

// SAFETY: every text is a `str`.
unsafe impl<S: AsRef<str> + Sync> Texts for [S] {
    fn len(&self) -> usize {
        <[S]>::len(self)
    }
    fn get(&self, i: usize) -> &[u8] {
        self[i].as_ref().as_bytes()
    }
    fn all_utf8(&self, _range: std::ops::Range<usize>) -> bool {
        true
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

// SAFETY: `all_utf8` checks the bytes it vouches for.
unsafe impl Texts for Packed<'_> {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    fn get(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    /// One check of the bytes the texts span, where checking ~76-byte texts one by one
    /// costs a call and its setup each. Valid bytes split at a character's middle would
    /// pass it, so every text must also start and end on a character boundary.
    fn all_utf8(&self, range: std::ops::Range<usize>) -> bool {
        let offs = &self.offsets[range.start..=range.end];
        let (lo, hi) = (offs[0] as usize, offs[offs.len() - 1] as usize);
        let is_boundary = |o: i64| {
            let o = o as usize;
            o <= lo || o >= hi || (self.data[o] as i8) >= -0x40
        };
        simdutf8::basic::from_utf8(&self.data[lo..hi]).is_ok()
            && offs.iter().all(|&o| is_boundary(o))
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
