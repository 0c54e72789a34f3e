//! Bench only: the floor under word-level matching, measured on the matcher's own code
//! path. Every text is checked as UTF-8, stripped and tokenised by the spacing rules, and
//! every token keyed and hashed as `push_key` does; then either nothing more, or one probe
//! per token of a plain `u64` set of the vocabulary's word hashes. The matcher's speed as
//! a fraction of these says how much its lookups and trie walk cost on top.

use super::Matcher;
use crate::flat::{FlatMap, EMPTY};
use crate::spacing::{for_each_token, py_strip};
use crate::texts::Texts;

/// A `u64` set of the vocabulary's word hashes, for [`Matcher::floor_probe`].
pub struct HashSetFloor {
    set: FlatMap<()>,
}

impl Matcher {
    /// Bench only: tokenise and hash every token of `texts` (no lookup). Returns a
    /// checksum of the hashes, so the work cannot be optimised away.
    #[doc(hidden)]
    pub fn floor_hash<T: Texts + ?Sized>(&self, texts: &T) -> u64 {
        let mut sum = 0u64;
        self.each_token_hash(texts, |h| sum = sum.wrapping_add(h));
        sum
    }

    /// `f` with the hash of every token of every valid text, as the matcher keys them.
    #[inline(always)]
    fn each_token_hash<T: Texts + ?Sized>(&self, texts: &T, mut f: impl FnMut(u64)) {
        let vocab = &self.words.vocab;
        for i in 0..texts.len() {
            let Ok(text) = std::str::from_utf8(texts.get(i)) else {
                continue;
            };
            let src = py_strip(text).as_bytes();
            for_each_token(src, |s, e| f(vocab.key_hash(src, s, e - s).1));
        }
    }

    /// Bench only: a plain hash set of the vocabulary's word hashes.
    #[doc(hidden)]
    pub fn floor_set(&self) -> HashSetFloor {
        let mut set = FlatMap::new();
        for h in self.words.vocab.hashes().filter(|&h| h != EMPTY) {
            if set.find(h, h, |_| true).is_none() {
                set.insert_new(h, h, (), |k, _| k);
            }
        }
        HashSetFloor { set }
    }

    /// Bench only: [`Matcher::floor_hash`] plus one probe of `set` per token. Returns the
    /// number of tokens found.
    #[doc(hidden)]
    pub fn floor_probe<T: Texts + ?Sized>(&self, texts: &T, set: &HashSetFloor) -> u64 {
        let mut found = 0u64;
        self.each_token_hash(texts, |h| {
            found += set.set.find(h, h, |_| true).is_some() as u64
        });
        found
    }
}
