//! Substring matching of spec §2, done mostly at the word level.
//!
//! The spaced text is `" " + body + " "`, so it is a chain of tokens joined by single
//! spaces (empty tokens kept). A padded pattern `" " + entry + " "` occurs in it iff the
//! entry's `' '`-separated words occur as consecutive interior tokens. That turns the
//! search into a walk of a word trie from each token: one hash probe per token instead of
//! one automaton step per byte. Patterns that lack a pad (MC2 entries that start or end
//! with a CJK-like character) need real substring search; they go to a (small)
//! Aho-Corasick automaton over the spaced bytes.

use std::hash::BuildHasher;
use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use foldhash::fast::FixedState;
use rayon::prelude::*;

use crate::dedup;
use crate::error::{Error, Result};
use crate::flat::FlatMap;
use crate::pool;
use crate::spacing::{for_each_token, py_strip, spaced_into};

const NONE: u32 = u32::MAX;
const HAS_CHILDREN: u32 = 1 << 31;
const NO_ENTRY: u32 = HAS_CHILDREN - 1;
/// Largest number of entries one matcher holds (ids are stored in 31 bits).
pub const MAX_ENTRIES: usize = NO_ENTRY as usize;
const HASH_SEED: u64 = 0x6d65_7461_636c_6970; // "metaclip"

/// Which pattern rule to use (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// MetaCLIP 1: every pattern is `" " + entry + " "`.
    Mc1,
    /// MetaCLIP 2: pads only next to characters that are not CJK-or-similar.
    Mc2,
    /// Ours, opt-in: MC2 with kana and Hangul treated as CJK-like, and every Unicode
    /// whitespace character in a text treated as a space.
    Fixed,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mc1" => Ok(Mode::Mc1),
            "mc2" => Ok(Mode::Mc2),
            "fixed" => Ok(Mode::Fixed),
            _ => Err(Error::invalid(format!(
                "unknown match mode {s:?} (expected mc1, mc2 or fixed)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Mc1 => "mc1",
            Mode::Mc2 => "mc2",
            Mode::Fixed => "fixed",
        }
    }

    /// Whether a pad goes next to this edge character of an entry.
    fn pads(self, c: Option<char>) -> bool {
        match (self, c) {
            (Mode::Mc1, _) | (_, None) => true,
            (Mode::Mc2, Some(c)) => !is_cjk_like(c),
            (Mode::Fixed, Some(c)) => !(is_cjk_like(c) || is_kana_or_hangul(c)),
        }
    }
}

/// The MC2 reference's "CJK-or-similar" set (spec §2). Kana and Hangul are not in it.
pub fn is_cjk_like(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0x2CEB0..=0x2EBEF | 0xF900..=0xFAFF
        | 0x2E80..=0x2EFF | 0x2F00..=0x2FDF | 0x2FF0..=0x2FFF
        | 0x0E00..=0x0E7F | 0x0E80..=0x0EFF | 0x1000..=0x109F | 0x1780..=0x17FF
        | 0x0F00..=0x0FFF
        | 0xFF0C | 0x3002 | 0x3001 | 0xFF1B | 0xFF1A | 0xFF1F | 0xFF01 | 0x201C | 0x201D
        | 0x2018 | 0x2019 | 0xFF08 | 0xFF09 | 0x3010 | 0x3011 | 0x300A | 0x300B | 0x3008
        | 0x3009 | 0x300C | 0x300D | 0x300E | 0x300F | 0xFF5E | 0x2014)
        || c.is_ascii_punctuation()
}

/// Added by fixed mode: Hiragana, Katakana (with extensions and half-width forms) and
/// Hangul (syllables and jamo).
pub fn is_kana_or_hangul(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF65..=0xFF9F
        | 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F
        | 0xD7B0..=0xD7FF)
}

const K1: u64 = 0x2d35_8dcc_aa6c_78a5;
const K2: u64 = 0x8bb8_4b93_962e_acc9;

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

#[inline(always)]
fn mix(key: u64) -> u64 {
    folded_multiply(key ^ K1, K2)
}

/// Words of up to 7 bytes are their own key (bytes + length in the top byte); longer
/// words keep their first 7 bytes and a length byte (capped at 255), and hash in full.
const SHORT: usize = 7;
/// Words of up to 15 bytes are checked inline: bytes 7..15 sit in the slot's `tail`.
const INLINE: usize = 15;

/// `n <= 8` bytes of `buf` from `at`, little-endian, zero above: one unaligned load when
/// 8 bytes are in bounds (assembling them byte by byte on the stack stalls the load).
#[inline(always)]
fn load_le(buf: &[u8], at: usize, n: usize) -> u64 {
    if let Some(w) = buf
        .get(at..at + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
    {
        let v = u64::from_le_bytes(w);
        return if n >= 8 {
            v
        } else {
            v & ((1u64 << (8 * n)) - 1)
        };
    }
    let mut tmp = [0u8; 8];
    tmp[..n].copy_from_slice(&buf[at..at + n]);
    u64::from_le_bytes(tmp)
}

/// (key, hash) of the word `buf[at..at + len]`.
#[inline(always)]
fn word_key_at(buf: &[u8], at: usize, len: usize, long_hasher: &FixedState) -> (u64, u64) {
    let key = load_le(buf, at, len.min(SHORT)) | ((len.min(255) as u64) << 56);
    let h = if len <= SHORT {
        mix(key)
    } else {
        long_hasher.hash_one(&buf[at..at + len])
    };
    (key, h)
}

/// Bytes 7..15 of the word `buf[at..at + len]` (zero-padded; the length is in the key),
/// 0 for short words.
#[inline(always)]
fn word_tail_at(buf: &[u8], at: usize, len: usize) -> u64 {
    if len <= SHORT {
        return 0;
    }
    load_le(buf, at + SHORT, (len - SHORT).min(INLINE - SHORT))
}

fn word_key(tok: &[u8], long_hasher: &FixedState) -> (u64, u64) {
    word_key_at(tok, 0, tok.len(), long_hasher)
}

fn word_tail(tok: &[u8]) -> u64 {
    word_tail_at(tok, 0, tok.len())
}

/// A vocabulary slot's value: the word's tail (see [`word_tail`]), id and root info.
#[derive(Clone, Copy, Default)]
struct Word {
    tail: u64,
    id: u32,
    info: u32,
}

/// Interned words of the padded entries: key → (word id, root info). The root info holds
/// the entry id of the one-word entry (low 31 bits) and `HAS_CHILDREN` (top bit). Words
/// of up to 15 bytes are compared inside the slot; only longer ones read `bytes`.
struct Vocab {
    table: FlatMap<Word>,
    /// Bytes of every word, `spans[id]` = (start, len) in `bytes`.
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
    hasher: FixedState,
}

impl Vocab {
    fn new() -> Self {
        Vocab {
            table: FlatMap::new(),
            bytes: Vec::new(),
            spans: Vec::new(),
            hasher: FixedState::with_seed(HASH_SEED),
        }
    }

    #[inline(always)]
    fn word(&self, id: u32) -> &[u8] {
        let (s, n) = self.spans[id as usize];
        &self.bytes[s as usize..(s + n) as usize]
    }

    /// The word `src[at..at + len]` (its key and hash already computed).
    #[inline(always)]
    fn get(&self, key: u64, hash: u64, src: &[u8], at: usize, len: usize) -> Option<(u32, u32)> {
        let found = if len <= SHORT {
            self.table.find(hash, key, |_| true)
        } else if len <= INLINE {
            let tail = word_tail_at(src, at, len);
            self.table.find(hash, key, |v| v.tail == tail)
        } else {
            let tail = word_tail_at(src, at, len);
            let tok = &src[at..at + len];
            self.table
                .find(hash, key, |v| v.tail == tail && self.word(v.id) == tok)
        };
        found.map(|v| (v.id, v.info))
    }

    fn lookup(&self, tok: &[u8]) -> Option<(u32, u32)> {
        let (key, hash) = word_key(tok, &self.hasher);
        self.get(key, hash, tok, 0, tok.len())
    }

    fn info_mut(&mut self, tok: &[u8]) -> Option<&mut u32> {
        let (key, hash) = word_key(tok, &self.hasher);
        let (table, bytes, spans) = (&mut self.table, &self.bytes, &self.spans);
        table
            .find_mut(hash, key, |v| {
                let (s, n) = spans[v.id as usize];
                &bytes[s as usize..(s + n) as usize] == tok
            })
            .map(|v| &mut v.info)
    }

    /// The word's id, inserting it if new.
    fn intern(&mut self, tok: &[u8]) -> Result<u32> {
        if let Some((id, _)) = self.lookup(tok) {
            return Ok(id);
        }
        let too_big = || Error::invalid("metadata words exceed 4 GiB");
        let start = u32::try_from(self.bytes.len()).map_err(|_| too_big())?;
        let len = u32::try_from(tok.len()).map_err(|_| too_big())?;
        self.bytes.extend_from_slice(tok);
        let id = u32::try_from(self.spans.len()).map_err(|_| too_big())?;
        if id as u64 >= ROOT {
            return Err(too_big());
        }
        self.spans.push((start, len));
        let (key, hash) = word_key(tok, &self.hasher);
        let (bytes, spans, hasher) = (&self.bytes, &self.spans, &self.hasher);
        let word = Word {
            tail: word_tail(tok),
            id,
            info: NO_ENTRY,
        };
        self.table.insert_new(hash, key, word, |key, v| {
            let (s, n) = spans[v.id as usize];
            if n as usize <= SHORT {
                mix(key)
            } else {
                hasher.hash_one(&bytes[s as usize..(s + n) as usize])
            }
        });
        Ok(id)
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.bytes.capacity() + self.spans.capacity() * 8
    }
}

/// Root nodes are words (key `ROOT | word id`); deeper nodes are numbered from 0.
const ROOT: u64 = 1 << 31;

#[inline(always)]
fn edge_key(parent: u64, word: u32) -> u64 {
    (parent << 32) | word as u64
}

/// A word trie: `edges` maps (parent node, word id) to (child node, child info).
///
/// `first` is a one-hash Bloom filter of the edges that leave a root (a word pair that
/// starts an entry), sized to stay in L2: most tokens start some entry, but most pairs of
/// tokens start none, and the filter answers those without touching `edges`.
struct WordTrie {
    vocab: Vocab,
    edges: FlatMap<(u32, u32)>,
    n_nodes: u32,
    first: Vec<u64>,
    first_shift: u32,
}

impl WordTrie {
    fn new() -> Self {
        WordTrie {
            vocab: Vocab::new(),
            edges: FlatMap::new(),
            n_nodes: 0,
            first: vec![0; 1],
            first_shift: 58,
        }
    }

    /// Build `first` once every entry is in (about 8 bits per root edge).
    fn build_filter(&mut self) {
        let roots: Vec<u64> = self.edges.keys().filter(|k| k >> 32 >= ROOT).collect();
        let bits = (roots.len() * 8).next_power_of_two().max(64);
        self.first = vec![0; bits / 64];
        self.first_shift = 64 - bits.trailing_zeros();
        for key in roots {
            let b = (mix(key) >> self.first_shift) as usize;
            self.first[b / 64] |= 1 << (b % 64);
        }
    }

    /// False when no entry starts with this root edge (`hash` = `mix` of its key).
    #[inline(always)]
    fn may_start(&self, hash: u64) -> bool {
        let b = (hash >> self.first_shift) as usize;
        self.first[b / 64] & (1 << (b % 64)) != 0
    }

    /// Insert; returns the entry already stored at this node, if any (a duplicate).
    fn insert(&mut self, entry: &str, id: u32) -> Result<Option<u32>> {
        let words: Vec<&[u8]> = entry.as_bytes().split(|&b| b == b' ').collect();
        let mut ids = Vec::with_capacity(words.len());
        for w in &words {
            ids.push(self.vocab.intern(w)?);
        }
        let last = ids.len() - 1;
        if last > 0 {
            if let Some(info) = self.vocab.info_mut(words[0]) {
                *info |= HAS_CHILDREN;
            }
        }
        let mut parent = ROOT | ids[0] as u64;
        let mut terminal = None;
        for (depth, &wid) in ids.iter().enumerate().skip(1) {
            let key = edge_key(parent, wid);
            let hash = mix(key);
            if self.edges.find(hash, key, |_| true).is_none() {
                let node = self.n_nodes;
                self.n_nodes = node
                    .checked_add(1)
                    .filter(|&n| (n as u64) < ROOT)
                    .ok_or_else(|| Error::invalid("too many trie nodes"))?;
                self.edges
                    .insert_new(hash, key, (node, NO_ENTRY), |k, _| mix(k));
            }
            let Some(child) = self.edges.find_mut(hash, key, |_| true) else {
                return Err(Error::invalid("internal: trie edge vanished"));
            };
            if depth < last {
                child.1 |= HAS_CHILDREN;
            }
            parent = child.0 as u64;
            terminal = Some(key);
        }
        let info = match terminal {
            None => self.vocab.info_mut(words[0]),
            Some(key) => self
                .edges
                .find_mut(mix(key), key, |_| true)
                .map(|c| &mut c.1),
        };
        let Some(info) = info else {
            return Err(Error::invalid("internal: trie node vanished"));
        };
        let old = *info & NO_ENTRY;
        if old != NO_ENTRY {
            return Ok(Some(old));
        }
        *info = (*info & HAS_CHILDREN) | id;
        Ok(None)
    }

    /// Push the entry ids whose words occur as consecutive tokens of `toks`
    /// (each token: `(word id, root info)`, id `NONE` when not in the vocabulary).
    #[inline]
    fn walk(&self, toks: &[(u32, u32)], out: &mut Vec<u32>) {
        for start in 0..toks.len() {
            let (wid, mut info) = toks[start];
            if wid == NONE {
                continue;
            }
            let mut node = ROOT | wid as u64;
            let mut next = start + 1;
            loop {
                let entry = info & NO_ENTRY;
                if entry != NO_ENTRY {
                    out.push(entry);
                }
                if info & HAS_CHILDREN == 0 || next >= toks.len() || toks[next].0 == NONE {
                    break;
                }
                let key = edge_key(node, toks[next].0);
                let hash = mix(key);
                match self.edges.find(hash, key, |_| true) {
                    Some(&(child, child_info)) => {
                        node = child as u64;
                        info = child_info;
                    }
                    None => break,
                }
                next += 1;
            }
        }
    }

    /// Prefetch the first edge of every token that starts a longer entry with the next
    /// token, and clear `HAS_CHILDREN` on the others (so `walk` never probes for them).
    #[inline]
    fn prefetch_edges(&self, toks: &mut [(u32, u32)]) {
        let Some(last) = toks.len().checked_sub(1) else {
            return;
        };
        for i in 0..last {
            let (wid, info) = toks[i];
            if info & HAS_CHILDREN == 0 {
                continue;
            }
            let next = toks[i + 1].0;
            let hash = mix(edge_key(ROOT | wid as u64, next));
            if next != NONE && self.may_start(hash) {
                self.edges.prefetch(hash);
            } else {
                toks[i].1 = info & !HAS_CHILDREN;
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.vocab.memory_bytes() + self.edges.memory_bytes() + self.first.capacity() * 8
    }
}

#[inline(always)]
fn push_key(vocab: &Vocab, buf: &[u8], at: usize, len: usize, keys: &mut Vec<TokenKey>) {
    let (key, hash) = word_key_at(buf, at, len, &vocab.hasher);
    vocab.table.prefetch(hash);
    keys.push((key, hash, at as u32, len as u32));
}

/// (key, hash, start, len) of a token in its text.
type TokenKey = (u64, u64, u32, u32);

/// Per-thread buffers reused across texts.
#[derive(Default)]
pub struct Scratch {
    spaced: Vec<u8>,
    toks: Vec<(u32, u32)>,
    keys: Vec<TokenKey>,
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

/// A random-access batch of texts as raw bytes (UTF-8 is checked while matching).
pub trait Texts: Sync {
    fn len(&self) -> usize;
    fn get(&self, i: usize) -> &[u8];
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
    pub data: &'a [u8],
    pub offsets: &'a [i64],
}

impl<'a> Packed<'a> {
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

/// Texts per parallel work item: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 2048;
/// Texts whose tokens are hashed (and their slots prefetched) before any is looked up.
const GROUP: usize = 16;

/// A built matcher over one metadata list.
pub struct Matcher {
    mode: Mode,
    n_entries: usize,
    words: WordTrie,
    n_word_entries: usize,
    substr: Option<(AhoCorasick, Vec<u32>)>,
    /// Whether `dedup::sort_dedup` may take its AVX2 path (checked once, here).
    avx2: bool,
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
        let mut patterns: Vec<Vec<u8>> = Vec::new();
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
                let mut p = Vec::with_capacity(entry.len() + 2);
                if left {
                    p.push(b' ');
                }
                p.extend_from_slice(entry.as_bytes());
                if right {
                    p.push(b' ');
                }
                patterns.push(p);
                pattern_entry.push(id as u32);
            }
        }
        if !patterns.is_empty() {
            let mut seen: std::collections::HashMap<&[u8], u32> = Default::default();
            for (p, &id) in patterns.iter().zip(&pattern_entry) {
                if let Some(first) = seen.insert(p.as_slice(), id) {
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
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .map_err(|e| Error::invalid(format!("cannot build automaton: {e}")))?;
            Some((ac, pattern_entry))
        };
        Ok(Matcher {
            mode,
            n_entries: entries.len(),
            words,
            n_word_entries,
            substr,
            avx2: dedup::has_avx2(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

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

    pub fn n_words(&self) -> usize {
        self.words.vocab.len()
    }

    /// Heap bytes held by the matcher (automaton memory included).
    pub fn memory_bytes(&self) -> usize {
        self.words.memory_bytes()
            + self
                .substr
                .as_ref()
                .map_or(0, |(ac, ids)| ac.memory_usage() + ids.capacity() * 4)
    }

    /// Append the sorted, unique ids matched by `text` to `out`.
    pub fn match_into(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
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
        self.lookup_into(src, &scratch.keys, &mut scratch.toks);
        let n = scratch.toks.len();
        self.finish_looked_up(text, 0..n, scratch, out);
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
    /// word ids of all tokens into `scratch.toks`, then prefetch every first trie edge.
    fn lookup_group(&self, group: &[(Option<&str>, usize)], scratch: &mut Scratch) {
        scratch.toks.clear();
        let mut from = 0;
        for &(text, to) in group {
            if let Some(t) = text {
                self.lookup_into(t.as_bytes(), &scratch.keys[from..to], &mut scratch.toks);
            }
            from = to;
        }
    }

    /// Append the (word id, root info) of each keyed token of `src` to `toks`, then
    /// prefetch the first trie edges of those tokens.
    #[inline]
    fn lookup_into(&self, src: &[u8], keys: &[TokenKey], toks: &mut Vec<(u32, u32)>) {
        if self.n_word_entries == 0 {
            return;
        }
        let vocab = &self.words.vocab;
        let first = toks.len();
        toks.extend(keys.iter().map(|&(key, hash, s, n)| {
            vocab
                .get(key, hash, src, s as usize, n as usize)
                .unwrap_or((NONE, NO_ENTRY))
        }));
        self.words.prefetch_edges(&mut toks[first..]);
    }

    /// Pass 3 for one text of a looked-up group: walk, substring automaton, sort, dedup.
    fn finish_looked_up(
        &self,
        text: &str,
        toks: Range<usize>,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        let start = out.len();
        if self.n_word_entries > 0 {
            self.words.walk(&scratch.toks[toks], out);
        }
        self.finish_ids(text, start, scratch, out);
    }

    /// Add the substring automaton's ids, then sort and dedup `out[start..]`.
    #[inline]
    fn finish_ids(&self, text: &str, start: usize, scratch: &mut Scratch, out: &mut Vec<u32>) {
        if let Some((ac, pattern_entry)) = &self.substr {
            spaced_into(text, self.mode == Mode::Fixed, &mut scratch.spaced);
            for m in ac.find_overlapping_iter(scratch.spaced.as_slice()) {
                out.push(pattern_entry[m.pattern().as_usize()]);
            }
        }
        let keep = dedup::sort_dedup(&mut out[start..], self.avx2);
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
        if self.mode == Mode::Fixed {
            for i in r {
                match std::str::from_utf8(texts.get(i)) {
                    Ok(text) => self.match_into(text, &mut scratch, &mut csr.ids),
                    Err(_) => csr.invalid.push((i - base) as u64),
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
                let text = std::str::from_utf8(texts.get(i)).ok();
                if let Some(t) = text {
                    self.push_keys(t, &mut scratch);
                }
                group.push((text, scratch.keys.len()));
            }
            // Pass 2 for the whole group, then prefetch the first trie edges of all texts.
            self.lookup_group(&group, &mut scratch);
            let mut from = 0;
            for (k, &(text, to)) in group.iter().enumerate() {
                match text {
                    Some(t) => self.finish_looked_up(t, from..to, &mut scratch, &mut csr.ids),
                    None => csr.invalid.push((start + k - base) as u64),
                }
                csr.offsets.push(csr.ids.len() as i64);
                from = to;
            }
            start = end;
        }
        csr
    }
}

/// Concatenate CSR parts in order.
pub fn concat(parts: Vec<Csr>, n: usize) -> Csr {
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
mod tests {
    use super::*;

    fn ids(m: &Matcher, text: &str) -> Vec<u32> {
        m.match_text(text)
    }

    #[test]
    fn mc1_consequences() {
        let entries = ["dog", "hot dog", "a", "St. Louis", "a , b", "Jr."];
        let m = Matcher::new(&entries, Mode::Mc1).unwrap();
        assert_eq!(ids(&m, "hot-dog (dog) dog's"), Vec::<u32>::new());
        assert_eq!(ids(&m, "Hot dog\tstand"), vec![0]);
        assert_eq!(ids(&m, "a hot dog"), vec![0, 1, 2]);
        assert_eq!(ids(&m, "St. Louis Jr."), Vec::<u32>::new());
        assert_eq!(ids(&m, "a,b"), vec![2, 4]);
        assert_eq!(ids(&m, "dog dog dog"), vec![0]);
    }

    #[test]
    fn mc2_pad_rule_and_kana_quirk() {
        let entries = ["カメラ", "相机", "dog"];
        let m = Matcher::new(&entries, Mode::Mc2).unwrap();
        assert_eq!(m.n_substring_entries(), 1);
        assert_eq!(ids(&m, "新しいカメラを買った"), Vec::<u32>::new());
        assert_eq!(ids(&m, "我的新相机很好"), vec![1]);
        let f = Matcher::new(&entries, Mode::Fixed).unwrap();
        assert_eq!(ids(&f, "新しいカメラを買った"), vec![0]);
        assert_eq!(ids(&f, "a\u{3000}dog\u{a0}"), vec![2]);
    }

    #[test]
    fn long_words_differ_only_where_they_differ() {
        let long_a = "x".repeat(300);
        let long_b = format!("{}y", "x".repeat(299));
        let entries = [
            "abcdefg",          // 7 bytes: the key alone
            "abcdefgh",         // 8: key + tail
            "abcdefghij",       // 10
            "abcdefghik",       // 10, differs in the tail
            "abcdefghijklmnop", // 16: tail + bytes check
            "abcdefghijklmnoq", // 16, differs past the tail
            long_a.as_str(),    // length byte capped at 255
            "abcdefghij abcdefg",
        ];
        let m = Matcher::new(&entries, Mode::Mc1).unwrap();
        assert_eq!(ids(&m, "abcdefgh abcdefghik"), vec![1, 3]);
        assert_eq!(ids(&m, "abcdefghijklmnoq abcdefghijklmnor"), vec![5]);
        assert_eq!(
            ids(&m, "abcdefghijklmno abcdefghijklmnopp"),
            Vec::<u32>::new()
        );
        assert_eq!(ids(&m, "abcdefghij abcdefg"), vec![0, 2, 7]);
        assert_eq!(ids(&m, &format!("{long_a} {long_b}")), vec![6]);
        assert_eq!(ids(&m, &format!("{long_a}x")), Vec::<u32>::new());
    }

    #[test]
    fn duplicates_are_named() {
        let err = Matcher::new(&["a", "b", "a"], Mode::Mc1).err().unwrap();
        assert!(err.to_string().contains("\"a\" (ids 0 and 2)"), "{err}");
    }

    #[test]
    fn batch_is_thread_independent() {
        let entries: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
        let m = Matcher::new(&entries, Mode::Mc1).unwrap();
        let texts: Vec<String> = (0..10_000)
            .map(|i| format!("w{} w{} x, w{}", i % 500, (i * 7) % 600, (i * 13) % 500))
            .collect();
        let one = m.match_batch(texts.as_slice(), 0..texts.len(), 1);
        let many = m.match_batch(texts.as_slice(), 0..texts.len(), 4);
        assert_eq!(one, many);
        assert_eq!(one.offsets.len(), texts.len() + 1);
        let part = m.match_batch(texts.as_slice(), 100..200, 2);
        let expect: Vec<u32> =
            one.ids[one.offsets[100] as usize..one.offsets[200] as usize].to_vec();
        assert_eq!(part.ids, expect);
    }

    #[test]
    fn packed_texts_report_invalid_utf8() {
        let data = b"dog\xffcat dog";
        let offsets = [0i64, 3, 4, 11];
        let packed = Packed::new(data, &offsets).unwrap();
        let m = Matcher::new(&["dog"], Mode::Mc1).unwrap();
        let csr = m.match_batch(&packed, 0..3, 1);
        assert_eq!(csr.offsets, vec![0, 1, 1, 2]);
        assert_eq!(csr.invalid, vec![1]);
    }
}
