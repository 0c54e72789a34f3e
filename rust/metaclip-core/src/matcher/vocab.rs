//! The vocabulary of the word trie: every word of the padded entries interned once, with
//! a key and hash that short words get without touching their bytes twice.

use std::hash::BuildHasher;

use bytemuck::{Pod, Zeroable};
use foldhash::fast::FixedState;

use super::trie::{NO_ENTRY, ROOT};
use crate::error::{Error, Result};
use crate::flat::{FlatMap, Slot};
use crate::mapped::Buf;

const HASH_SEED: u64 = 0x6d65_7461_636c_6970; // "metaclip"

const K1: u64 = 0x2d35_8dcc_aa6c_78a5;
const K2: u64 = 0x8bb8_4b93_962e_acc9;

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = (a as u128).wrapping_mul(b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The hash of a short word's key and of a trie edge key.
#[inline(always)]
pub(super) fn mix(key: u64) -> u64 {
    folded_multiply(key ^ K1, K2)
}

/// Words of up to 7 bytes are their own key (bytes + length in the top byte); longer
/// words keep their first 7 bytes and a length byte (capped at 255), and hash in full.
const SHORT: usize = 7;
/// Words of up to 15 bytes are checked inline: bytes 7..15 sit in the slot's `tail`.
const INLINE: usize = 15;

/// `n <= 8` bytes of `buf` from `at`, little-endian, zero above: one unaligned load of the
/// 8 bytes from `at`, or of the last 8 of `buf` shifted down when those run past its end
/// (so a text's last word costs no copy and no branch of its own).
#[inline(always)]
fn load_le(buf: &[u8], at: usize, n: usize) -> u64 {
    let keep = if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    };
    if let Some(last) = buf.len().checked_sub(8) {
        let from = at.min(last);
        if let Some(w) = buf
            .get(from..from + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            // `at - from` is at most 7 whenever n > 0 (and n = 0 keeps nothing).
            return u64::from_le_bytes(w).wrapping_shr(8 * (at - from) as u32) & keep;
        }
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
#[derive(Clone, Copy, Default, Pod, Zeroable)]
#[repr(C)]
pub(super) struct Word {
    tail: u64,
    id: u32,
    info: u32,
}

// SAFETY: `repr(C)` u64 key + `Word` (u64, u32, u32): 24 bytes, no padding, any bits valid.
unsafe impl Zeroable for Slot<Word> {}
// SAFETY: as above.
unsafe impl Pod for Slot<Word> {}
const _: () = assert!(std::mem::size_of::<Slot<Word>>() == 24);

/// Interned words of the padded entries: key → (word id, root info). The root info holds
/// the entry id of the one-word entry (low 31 bits) and `HAS_CHILDREN` (top bit). Words
/// of up to 15 bytes are compared inside the slot; only longer ones read `bytes`.
pub(super) struct Vocab {
    table: FlatMap<Word>,
    /// Bytes of every word, `spans[id]` = (start, len) in `bytes`.
    bytes: Buf<u8>,
    spans: Buf<[u32; 2]>,
    hasher: FixedState,
}

impl Vocab {
    pub(super) fn new() -> Self {
        Vocab {
            table: FlatMap::new(),
            bytes: Buf::default(),
            spans: Buf::default(),
            hasher: FixedState::with_seed(HASH_SEED),
        }
    }

    #[inline(always)]
    fn word(&self, id: u32) -> &[u8] {
        let [s, n] = self.spans[id as usize];
        &self.bytes[s as usize..(s + n) as usize]
    }

    /// The word `src[at..at + len]` (its key and hash already computed).
    #[inline(always)]
    pub(super) fn get(
        &self,
        key: u64,
        hash: u64,
        src: &[u8],
        at: usize,
        len: usize,
    ) -> Option<(u32, u32)> {
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

    pub(super) fn info_mut(&mut self, tok: &[u8]) -> Option<&mut u32> {
        let (key, hash) = word_key(tok, &self.hasher);
        let (table, bytes, spans) = (&mut self.table, &self.bytes, &self.spans);
        table
            .find_mut(hash, key, |v| {
                let [s, n] = spans[v.id as usize];
                &bytes[s as usize..(s + n) as usize] == tok
            })
            .map(|v| &mut v.info)
    }

    /// The word's id, inserting it if new.
    pub(super) fn intern(&mut self, tok: &[u8]) -> Result<u32> {
        if let Some((id, _)) = self.lookup(tok) {
            return Ok(id);
        }
        let too_big = || Error::invalid("metadata words exceed 4 GiB");
        let start = u32::try_from(self.bytes.len()).map_err(|_| too_big())?;
        let len = u32::try_from(tok.len()).map_err(|_| too_big())?;
        self.bytes.with_vec(|b| b.extend_from_slice(tok));
        let id = u32::try_from(self.spans.len()).map_err(|_| too_big())?;
        if id as u64 >= ROOT {
            return Err(too_big());
        }
        self.spans.with_vec(|v| v.push([start, len]));
        let (key, hash) = word_key(tok, &self.hasher);
        let (bytes, spans, hasher) = (&self.bytes, &self.spans, &self.hasher);
        let word = Word {
            tail: word_tail(tok),
            id,
            info: NO_ENTRY,
        };
        self.table.insert_new(hash, key, word, |key, v| {
            let [s, n] = spans[v.id as usize];
            if n as usize <= SHORT {
                mix(key)
            } else {
                hasher.hash_one(&bytes[s as usize..(s + n) as usize])
            }
        });
        Ok(id)
    }

    /// (key, hash) of the token `buf[at..at + len]`, as `push_key` computes them.
    #[inline(always)]
    pub(super) fn key_hash(&self, buf: &[u8], at: usize, len: usize) -> (u64, u64) {
        word_key_at(buf, at, len, &self.hasher)
    }

    /// The hash of every word, in id order.
    pub(super) fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.spans.len() as u32).map(|id| word_key(self.word(id), &self.hasher).1)
    }

    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.bytes.len() + self.spans.len() * 8
    }

    /// The tables, for writing them to a file.
    pub(super) fn parts(&self) -> (&FlatMap<Word>, &Buf<u8>, &Buf<[u32; 2]>) {
        (&self.table, &self.bytes, &self.spans)
    }

    /// A vocabulary over tables read back (or mapped) from a file.
    pub(super) fn from_parts(table: FlatMap<Word>, bytes: Buf<u8>, spans: Buf<[u32; 2]>) -> Self {
        Vocab {
            table,
            bytes,
            spans,
            hasher: FixedState::with_seed(HASH_SEED),
        }
    }

    /// A fingerprint of the long-word hash function: a file written under another one
    /// (another foldhash) would find nothing, so it is refused.
    pub(super) fn hash_check(&self) -> u64 {
        self.hasher
            .hash_one(b"metaclip matcher file hash check".as_slice())
    }
}

/// Key and hash the token `buf[at..at + len]` into `keys`, prefetching its slot.
#[inline(always)]
pub(super) fn push_key(vocab: &Vocab, buf: &[u8], at: usize, len: usize, keys: &mut Vec<TokenKey>) {
    let (key, hash) = word_key_at(buf, at, len, &vocab.hasher);
    vocab.table.prefetch(hash);
    keys.push((key, hash, at as u32, len as u32));
}

/// (key, hash, start, len) of a token in its text.
pub(super) type TokenKey = (u64, u64, u32, u32);
