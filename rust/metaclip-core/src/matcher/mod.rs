//! Substring matching of spec §2, done mostly at the word level.
//!
//! The spaced text is `" " + body + " "`, so it is a chain of tokens joined by single
//! spaces (empty tokens kept). A padded pattern `" " + entry + " "` occurs in it iff the
//! entry's `' '`-separated words occur as consecutive interior tokens. That turns the
//! search into a walk of a word trie from each token: one hash probe per token instead of
//! one automaton step per byte. Patterns that lack a pad (MC2 entries that start or end
//! with a CJK-like character) need real substring search; they go to a (small)
//! character-level Aho-Corasick automaton (`chars`, a double array of our own) over the
//! spaced text: one transition per code point rather than per byte, which for Han or Thai
//! text is a third of the steps. A UTF-8 pattern occurs as a byte substring of UTF-8 text
//! iff it occurs as a code-point substring, so either automaton gives the spec's matches.

//!
//! The parts: `mode` (which entries keep their pads), `vocab` (interned words, their
//! keys and hashes), `trie` (entries as word chains and the walk over a text's tokens);
//! this module builds them and runs the passes over batches of texts.

mod chars;
mod file;
mod floor;
mod mode;
mod trie;
mod vocab;

use std::ops::Range;

use rayon::prelude::*;

pub use self::file::{digest_hex, metadata_digest, FORMAT_VERSION};
pub use self::floor::HashSetFloor;
pub use self::mode::{is_cjk_like, Mode};
pub use crate::texts::{Csr, Packed, Texts};

use self::chars::CharAutomaton;
use self::trie::{WordTrie, NONE, NO_ENTRY};
use self::vocab::{push_key, TokenKey};
use crate::dedup;
use crate::error::{Error, Result};
use crate::pool;
use crate::spacing::{for_each_token, py_strip, spaced_into};

/// Largest number of entries one matcher holds (ids are stored in 31 bits).
pub const MAX_ENTRIES: usize = NO_ENTRY as usize;

/// Per-thread buffers reused across texts.
#[derive(Default)]
struct Scratch {
    spaced: Vec<u8>,
    toks: Vec<(u32, u32)>,
    keys: Vec<TokenKey>,
    /// Tokens (`toks` indices) that may start a longer entry, and where each text's
    /// run of them ends.
    starts: Vec<u32>,
    start_ends: Vec<usize>,
    /// Per token of `toks`: the hash of its root edge to the next token.
    pair_hashes: Vec<u64>,
    /// For texts with many ids (made on first use).
    bitmap: Option<dedup::Bitmap>,
}

/// Texts per parallel work item: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 2048;
/// Texts whose tokens are hashed (and their slots prefetched) before any is looked up.
const GROUP: usize = 16;

/// Texts with more ids than this (the most the AVX2 rank sort takes) are sorted through a
/// bitmap of all ids.
const BITMAP_FROM: usize = 64;

/// A built matcher over one metadata list.
pub struct Matcher {
    mode: Mode,
    n_entries: usize,
    words: WordTrie,
    n_word_entries: usize,
    /// Substring patterns; a match's value is its entry id.
    substr: Option<CharAutomaton>,
    /// Which SIMD path `dedup::sort_dedup` may take (checked once, here).
    simd: dedup::Simd,
    /// [`metadata_digest`] of the entries and mode (checked when loading a saved file).
    digest: [u8; 16],
}

impl Matcher {
    /// Build from entries (id = position). Duplicate entries are an error naming them.
    pub fn new<S: AsRef<str>>(entries: &[S], mode: Mode) -> Result<Self> {
        if entries.len() > MAX_ENTRIES {
            return Err(Error::invalid(format!(
                "at most {MAX_ENTRIES} entries per matcher"
            )));
        }
        let mut words = WordTrie::new();
        let mut n_word_entries = 0;
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_entry: Vec<u32> = Vec::new();
        let mut duplicates: Vec<String> = Vec::new();
        for (id, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref();
            let left = mode.pads(entry.chars().next());
            let right = mode.pads(entry.chars().next_back());
            if left && right {
                n_word_entries += 1;
                if let Some(first) = words.insert(entry, id as u32)? {
                    duplicates.push(format!("{entry:?} (ids {first} and {id})"));
                }
            } else {
                let mut p = String::with_capacity(entry.len() + 2);
                if left {
                    p.push(' ');
                }
                p.push_str(entry);
                if right {
                    p.push(' ');
                }
                patterns.push(p);
                pattern_entry.push(id as u32);
            }
        }
        if !patterns.is_empty() {
            let mut seen: std::collections::HashMap<&str, u32> = Default::default();
            for (p, &id) in patterns.iter().zip(&pattern_entry) {
                if let Some(first) = seen.insert(p.as_str(), id) {
                    let e = entries[id as usize].as_ref();
                    duplicates.push(format!("{e:?} (ids {first} and {id})"));
                }
            }
        }
        if !duplicates.is_empty() {
            return Err(Error::Duplicates {
                count: duplicates.len(),
                examples: duplicates
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        words.build_filter();
        let substr = if patterns.is_empty() {
            None
        } else {
            let pairs = patterns.iter().map(|p| p.as_str()).zip(pattern_entry);
            Some(CharAutomaton::build(pairs)?)
        };
        Ok(Matcher {
            mode,
            n_entries: entries.len(),
            words,
            n_word_entries,
            substr,
            simd: dedup::Simd::detect(),
            digest: metadata_digest(entries, mode),
        })
    }

    /// The pattern rule this matcher was built with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of entries (ids are `0..n_entries`).
    pub fn n_entries(&self) -> usize {
        self.n_entries
    }

    /// Entries matched at the word level (both pads present).
    pub fn n_word_entries(&self) -> usize {
        self.n_word_entries
    }

    /// Entries that need substring search (a pad is missing).
    pub fn n_substring_entries(&self) -> usize {
        self.n_entries - self.n_word_entries
    }

    /// Distinct words in the word-level entries.
    pub fn n_words(&self) -> usize {
        self.words.vocab.len()
    }

    /// Bytes of the matcher's tables, on the heap or mapped from a file (automaton included).
    pub fn memory_bytes(&self) -> usize {
        self.words.memory_bytes() + self.automaton_bytes()
    }

    /// Bytes of the substring automaton's tables (on the heap, or mapped from a file).
    pub fn automaton_bytes(&self) -> usize {
        self.substr.as_ref().map_or(0, |ac| ac.memory_bytes())
    }

    /// Append the sorted, unique ids matched by `text` to `out`.
    fn match_into(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
        scratch.keys.clear();
        let copied;
        let src: &[u8] = if self.mode == Mode::Fixed {
            // The tokens index the spaced text, which `finish_looked_up` rebuilds: copy it.
            copied = self.push_keys(text, scratch).to_vec();
            &copied
        } else {
            self.push_keys(text, scratch);
            text.as_bytes()
        };
        scratch.toks.clear();
        scratch.starts.clear();
        scratch.pair_hashes.clear();
        self.lookup_into(src, &scratch.keys, &mut scratch.toks);
        if self.n_word_entries > 0 {
            let (toks, hashes) = (&scratch.toks, &mut scratch.pair_hashes);
            self.words.pair_hashes(toks, hashes);
            self.words.find_starts(toks, hashes, 0, &mut scratch.starts);
        }
        let (n, m) = (scratch.toks.len(), scratch.starts.len());
        self.finish_looked_up(text, 0..n, 0..m, scratch, out);
    }

    /// Pass 1 for one text: key and hash of every word-level token, prefetching its slot.
    /// Returns the bytes the token offsets index (the stripped text, or in fixed mode the
    /// spaced text).
    #[inline]
    fn push_keys<'a>(&self, text: &'a str, scratch: &'a mut Scratch) -> &'a [u8] {
        if self.n_word_entries == 0 {
            return text.as_bytes();
        }
        let vocab = &self.words.vocab;
        let Scratch { spaced, keys, .. } = scratch;
        if self.mode == Mode::Fixed {
            // Unicode spaces become boundaries: tokenise the spaced text itself.
            spaced_into(text, true, spaced);
            let inner = &spaced[1..spaced.len() - 1];
            let mut at = 0;
            for tok in inner.split(|&b| b == b' ') {
                push_key(vocab, inner, at, tok.len(), keys);
                at += tok.len() + 1;
            }
            inner
        } else {
            let src = py_strip(text).as_bytes();
            let base = src.as_ptr() as usize - text.as_ptr() as usize;
            let all = text.as_bytes();
            for_each_token(src, |s, e| push_key(vocab, all, base + s, e - s, keys));
            all
        }
    }

    /// Pass 2 for a group of texts (their keys are consecutive in `scratch.keys`): the
    /// word ids of all tokens into `scratch.toks`, then the tokens that may start a longer
    /// entry (their first trie edges prefetched) into `scratch.starts`.
    fn lookup_group(&self, group: &[(Option<&str>, usize)], scratch: &mut Scratch) {
        scratch.toks.clear();
        scratch.starts.clear();
        scratch.start_ends.clear();
        scratch.pair_hashes.clear();
        let mut from = 0;
        for &(text, to) in group {
            if let Some(t) = text {
                let keys = &scratch.keys[from..to];
                self.lookup_into(t.as_bytes(), keys, &mut scratch.toks);
            }
            from = to;
        }
        if self.n_word_entries == 0 {
            scratch.start_ends.resize(group.len(), 0);
            return;
        }
        // The filter words for every text, then the filter checks: the words are in cache
        // by the time they are read.
        let mut from = 0;
        for &(_, to) in group {
            self.words
                .pair_hashes(&scratch.toks[from..to], &mut scratch.pair_hashes);
            from = to;
        }
        let mut from = 0;
        for &(_, to) in group {
            let (toks, hashes) = (&scratch.toks[from..to], &scratch.pair_hashes[from..to]);
            self.words
                .find_starts(toks, hashes, from as u32, &mut scratch.starts);
            scratch.start_ends.push(scratch.starts.len());
            from = to;
        }
    }

    /// Append the (word id, root info) of each keyed token of `src` to `toks`.
    #[inline]
    fn lookup_into(&self, src: &[u8], keys: &[TokenKey], toks: &mut Vec<(u32, u32)>) {
        if self.n_word_entries == 0 {
            return;
        }
        let vocab = &self.words.vocab;
        toks.extend(keys.iter().map(|&(key, hash, s, n)| {
            vocab
                .get(key, hash, src, s as usize, n as usize)
                .unwrap_or((NONE, NO_ENTRY))
        }));
    }

    /// Pass 3 for one text of a looked-up group: walk, substring automaton, sort, dedup.
    fn finish_looked_up(
        &self,
        text: &str,
        toks: Range<usize>,
        starts: Range<usize>,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        let start = out.len();
        if self.n_word_entries > 0 {
            let base = toks.start as u32;
            self.words
                .walk(&scratch.toks[toks], &scratch.starts[starts], base, out);
        }
        if let Some(ac) = &self.substr {
            spaced_into(text, self.mode == Mode::Fixed, &mut scratch.spaced);
            ac.for_each_match(as_str(&scratch.spaced), |v| out.push(v));
        }
        let ids = &mut out[start..];
        let keep = if ids.len() > BITMAP_FROM {
            let n = self.n_entries;
            let bitmap = scratch.bitmap.get_or_insert_with(|| dedup::Bitmap::new(n));
            bitmap.sort_dedup(ids)
        } else {
            dedup::sort_dedup(ids, self.simd)
        };
        out.truncate(start + keep);
    }

    /// Sorted, unique ids matched by one text.
    pub fn match_text(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.match_into(text, &mut Scratch::default(), &mut out);
        out
    }

    /// Match `texts[range]` with `threads` workers (0 = all cores). The result is the same
    /// whatever the thread count.
    pub fn match_batch<T: Texts + ?Sized>(
        &self,
        texts: &T,
        range: Range<usize>,
        threads: usize,
    ) -> Csr {
        if threads == 1 || range.len() <= CHUNK {
            // One thread: one output, no per-chunk parts to concatenate.
            return self.match_chunk(texts, range.clone(), range.start);
        }
        let chunks: Vec<Range<usize>> = range
            .clone()
            .step_by(CHUNK)
            .map(|s| s..(s + CHUNK).min(range.end))
            .collect();
        let run = |r: &Range<usize>| self.match_chunk(texts, r.clone(), range.start);
        let parts: Vec<Csr> = pool::install(threads, || chunks.par_iter().map(run).collect());
        concat(parts, range.len())
    }

    fn match_chunk<T: Texts + ?Sized>(&self, texts: &T, r: Range<usize>, base: usize) -> Csr {
        let mut scratch = Scratch::default();
        let mut csr = Csr {
            offsets: Vec::with_capacity(r.len() + 1),
            ids: Vec::with_capacity(r.len() * 4),
            invalid: Vec::new(),
        };
        csr.offsets.push(0);
        let all_utf8 = texts.all_utf8(r.clone());
        let text_at = |i: usize| -> Option<&str> {
            let bytes = texts.get(i);
            if all_utf8 {
                // SAFETY: `all_utf8` said every text of the range is valid UTF-8.
                Some(unsafe { std::str::from_utf8_unchecked(bytes) })
            } else {
                std::str::from_utf8(bytes).ok()
            }
        };
        if self.mode == Mode::Fixed {
            for i in r {
                match text_at(i) {
                    Some(text) => self.match_into(text, &mut scratch, &mut csr.ids),
                    None => csr.invalid.push((i - base) as u64),
                }
                csr.offsets.push(csr.ids.len() as i64);
            }
            return csr;
        }
        // Pass 1 runs over a group of texts before their lookups, so the prefetched
        // slots have time to arrive.
        let mut group: Vec<(Option<&str>, usize)> = Vec::with_capacity(GROUP);
        let mut start = r.start;
        while start < r.end {
            let end = (start + GROUP).min(r.end);
            group.clear();
            scratch.keys.clear();
            for i in start..end {
                let text = text_at(i);
                if let Some(t) = text {
                    self.push_keys(t, &mut scratch);
                }
                group.push((text, scratch.keys.len()));
            }
            // Pass 2 for the whole group, then prefetch the first trie edges of all texts.
            self.lookup_group(&group, &mut scratch);
            let (mut from, mut starts_from) = (0, 0);
            for (k, &(text, to)) in group.iter().enumerate() {
                let starts_to = scratch.start_ends[k];
                match text {
                    Some(t) => {
                        let (toks, starts) = (from..to, starts_from..starts_to);
                        self.finish_looked_up(t, toks, starts, &mut scratch, &mut csr.ids)
                    }
                    None => csr.invalid.push((start + k - base) as u64),
                }
                csr.offsets.push(csr.ids.len() as i64);
                (from, starts_from) = (to, starts_to);
            }
            start = end;
        }
        csr
    }
}

/// A spaced text as `str`.
fn as_str(spaced: &[u8]) -> &str {
    // SAFETY: only ever given `spaced_into`'s output, which copies whole characters of a
    // `str` and adds or replaces only ASCII bytes, so it is UTF-8 too.
    unsafe { std::str::from_utf8_unchecked(spaced) }
}

/// Concatenate CSR parts in order.
fn concat(parts: Vec<Csr>, n: usize) -> Csr {
    if parts.len() == 1 {
        if let Some(only) = parts.into_iter().next() {
            return only;
        }
        return Csr::default();
    }
    let nnz: usize = parts.iter().map(|p| p.ids.len()).sum();
    let mut out = Csr {
        offsets: Vec::with_capacity(n + 1),
        ids: Vec::with_capacity(nnz),
        invalid: Vec::new(),
    };
    out.offsets.push(0);
    let mut rows = 0u64;
    for p in parts {
        let base = out.ids.len() as i64;
        out.offsets.extend(p.offsets[1..].iter().map(|o| o + base));
        out.ids.extend_from_slice(&p.ids);
        out.invalid.extend(p.invalid.iter().map(|i| i + rows));
        rows += (p.offsets.len() - 1) as u64;
    }
    out
}

#[cfg(test)]
mod tests;
