//! Interned words: each distinct word stored once, so the counter handles `u32` ids.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::{Error, Result};

/// Interned words: an arena of UTF-8 text, end offsets, and a hash table of ids.
#[derive(Default)]
pub struct Vocab {
    text: String,
    ends: Vec<usize>,
    table: HashTable<u32>,
    hasher: FixedState,
}

#[inline]
fn word<'a>(text: &'a str, ends: &[usize], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &text[start..ends[i]]
}

impl Vocab {
    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no word was interned.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The word with this id (panics on an id this vocabulary never returned).
    pub fn get(&self, id: u32) -> &str {
        word(&self.text, &self.ends, id)
    }

    /// The id of `w`, if interned.
    pub fn lookup(&self, w: &str) -> Option<u32> {
        let h = self.hasher.hash_one(w);
        let (text, ends) = (&self.text, &self.ends);
        self.table.find(h, |&id| word(text, ends, id) == w).copied()
    }

    /// The id of `w`, interning it if new.
    pub fn intern(&mut self, w: &str) -> Result<u32> {
        let Vocab {
            text,
            ends,
            table,
            hasher,
        } = self;
        let h = hasher.hash_one(w);
        if let Some(&id) = table.find(h, |&id| word(text, ends, id) == w) {
            return Ok(id);
        }
        let id = u32::try_from(ends.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .ok_or_else(|| {
                Error::invalid("vocabulary is full (more than 4,294,967,294 distinct words)")
            })?;
        text.push_str(w);
        ends.push(text.len());
        let (text, ends) = (&*text, &*ends);
        table.insert_unique(h, id, |&i| hasher.hash_one(word(text, ends, i)));
        Ok(id)
    }

    /// Approximate heap bytes used.
    pub fn heap_bytes(&self) -> u64 {
        (self.text.capacity() + self.ends.capacity() * 8 + self.table.capacity() * 5) as u64
    }
}
