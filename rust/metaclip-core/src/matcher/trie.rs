//! The word trie: entries as chains of word ids, walked from each token of a text.

use super::vocab::{mix, Vocab};
use crate::error::{Error, Result};
use crate::flat::{prefetch_ptr, FlatMap};
use crate::mapped::Buf;

/// The word id of a token that is not in the vocabulary.
pub(super) const NONE: u32 = u32::MAX;
/// Node info, top bit: some entry continues past this node.
pub(super) const HAS_CHILDREN: u32 = 1 << 31;
/// Node info, low 31 bits: the id of the entry that ends here, or this when none does.
pub(super) const NO_ENTRY: u32 = HAS_CHILDREN - 1;

/// Root nodes are words (key `ROOT | word id`); deeper nodes are numbered from 0.
pub(super) const ROOT: u64 = 1 << 31;

#[inline(always)]
fn edge_key(parent: u64, word: u32) -> u64 {
    (parent << 32) | word as u64
}

/// A word trie: `edges` maps (parent node, word id) to (child node, child info).
///
/// `first` is a one-hash Bloom filter of the edges that leave a root (a word pair that
/// starts an entry), sized to stay in L2: most tokens start some entry, but most pairs of
/// tokens start none, and the filter answers those without touching `edges`.
pub(super) struct WordTrie {
    pub(super) vocab: Vocab,
    edges: FlatMap<[u32; 2]>,
    n_nodes: u32,
    first: Buf<u64>,
    first_shift: u32,
}

impl WordTrie {
    pub(super) fn new() -> Self {
        WordTrie {
            vocab: Vocab::new(),
            edges: FlatMap::new(),
            n_nodes: 0,
            first: Buf::from_vec(vec![0; 1]),
            first_shift: 58,
        }
    }

    /// Build `first` once every entry is in (about 8 bits per root edge).
    pub(super) fn build_filter(&mut self) {
        let roots: Vec<u64> = self.edges.keys().filter(|k| k >> 32 >= ROOT).collect();
        let bits = (roots.len() * 8).next_power_of_two().max(64);
        let mut first = vec![0u64; bits / 64];
        self.first_shift = 64 - bits.trailing_zeros();
        for key in roots {
            let b = (mix(key) >> self.first_shift) as usize;
            first[b / 64] |= 1 << (b % 64);
        }
        self.first = Buf::from_vec(first);
    }

    /// The filter bit of a root edge (`hash` = `mix` of its key): (word index, bit).
    #[inline(always)]
    fn filter_bit(&self, hash: u64) -> (usize, u32) {
        let b = (hash >> self.first_shift) as usize;
        (b / 64, (b % 64) as u32)
    }

    /// False when no entry starts with this root edge (`hash` = `mix` of its key).
    #[inline(always)]
    fn may_start(&self, hash: u64) -> bool {
        let (w, bit) = self.filter_bit(hash);
        self.first[w] & (1 << bit) != 0
    }

    /// Insert; returns the entry already stored at this node, if any (a duplicate).
    pub(super) fn insert(&mut self, entry: &str, id: u32) -> Result<Option<u32>> {
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
                    .insert_new(hash, key, [node, NO_ENTRY], |k, _| mix(k));
            }
            let Some(child) = self.edges.find_mut(hash, key, |_| true) else {
                return Err(Error::invalid("internal: trie edge vanished"));
            };
            if depth < last {
                child[1] |= HAS_CHILDREN;
            }
            parent = child[0] as u64;
            terminal = Some(key);
        }
        let info = match terminal {
            None => self.vocab.info_mut(words[0]),
            Some(key) => self
                .edges
                .find_mut(mix(key), key, |_| true)
                .map(|c| &mut c[1]),
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

    /// Push the entry ids whose words occur as consecutive tokens of `toks` (each token:
    /// `(word id, root info)`, id `NONE` when not in the vocabulary). `starts` are the
    /// tokens (as `toks` indices + `base`) that may start a longer entry, from
    /// [`WordTrie::find_starts`].
    #[inline]
    pub(super) fn walk(&self, toks: &[(u32, u32)], starts: &[u32], base: u32, out: &mut Vec<u32>) {
        // One-word entries, without a branch per token (whether a token is an entry is
        // data, and a branch on it mispredicts).
        extend_where(out, toks.len(), |k| {
            let entry = toks[k].1 & NO_ENTRY;
            (entry, entry != NO_ENTRY)
        });
        // Longer entries: only from the tokens that may start one.
        for &s in starts {
            let start = (s - base) as usize;
            let mut node = ROOT | toks[start].0 as u64;
            let mut next = start + 1;
            while next < toks.len() && toks[next].0 != NONE {
                let key = edge_key(node, toks[next].0);
                let Some(&[child, info]) = self.edges.find(mix(key), key, |_| true) else {
                    break;
                };
                let entry = info & NO_ENTRY;
                if entry != NO_ENTRY {
                    out.push(entry);
                }
                if info & HAS_CHILDREN == 0 {
                    break;
                }
                node = child as u64;
                next += 1;
            }
        }
    }

    /// Push, for each token of `toks` but the last, the `mix` hash of the root edge from
    /// its word to the next token's word, prefetching the filter word it reads, so that
    /// [`WordTrie::find_starts`] finds it in cache (and a 0 for the last token).
    #[inline]
    pub(super) fn pair_hashes(&self, toks: &[(u32, u32)], hashes: &mut Vec<u64>) {
        for w in toks.windows(2) {
            let hash = mix(edge_key(ROOT | w[0].0 as u64, w[1].0));
            let (w, _) = self.filter_bit(hash);
            prefetch_ptr(self.first.as_ptr().wrapping_add(w) as *const u8);
            hashes.push(hash);
        }
        if !toks.is_empty() {
            hashes.push(0);
        }
    }

    /// Append to `starts` the tokens of `toks` (as indices + `base`) whose word and the
    /// next token's word begin a longer entry, as far as the filter tells, and prefetch
    /// that first edge. `hashes` are from [`WordTrie::pair_hashes`]. No branch on the
    /// outcome: it is data, and mispredicts.
    #[inline]
    pub(super) fn find_starts(
        &self,
        toks: &[(u32, u32)],
        hashes: &[u64],
        base: u32,
        starts: &mut Vec<u32>,
    ) {
        let Some(last) = toks.len().checked_sub(1) else {
            return;
        };
        // A line that is in cache anyway, prefetched when no edge is wanted.
        let idle = self.first.as_ptr() as *const u8;
        extend_where(starts, last, |i| {
            let next = toks[i + 1].0;
            let hash = hashes[i];
            let may = (toks[i].1 & HAS_CHILDREN != 0) & (next != NONE) & self.may_start(hash);
            prefetch_ptr(if may { self.edges.slot_ptr(hash) } else { idle });
            (base + i as u32, may)
        });
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.vocab.memory_bytes() + self.edges.memory_bytes() + self.first.len() * 8
    }

    /// The tables, for writing them to a file: (edges, node count, filter, filter shift).
    pub(super) fn parts(&self) -> (&FlatMap<[u32; 2]>, u32, &Buf<u64>, u32) {
        (&self.edges, self.n_nodes, &self.first, self.first_shift)
    }

    /// A trie over tables read back (or mapped) from a file.
    pub(super) fn from_parts(
        vocab: Vocab,
        edges: FlatMap<[u32; 2]>,
        n_nodes: u32,
        first: Buf<u64>,
        first_shift: u32,
    ) -> Result<Self> {
        // `may_start` indexes `first` by the top bits of a hash: the sizes must agree.
        let bits = (first.len() as u64) * 64;
        if !bits.is_power_of_two()
            || first_shift == 0
            || first_shift >= 64
            || bits != 1 << (64 - first_shift)
        {
            return Err(Error::invalid(
                "matcher file: the root filter has a bad size",
            ));
        }
        Ok(WordTrie {
            vocab,
            edges,
            n_nodes,
            first,
            first_shift,
        })
    }
}

/// Append `item(k).0` for each `k < n` whose `item(k).1` holds, with no branch on it:
/// every value is written, and the length advances by the flag.
#[inline(always)]
fn extend_where(out: &mut Vec<u32>, n: usize, mut item: impl FnMut(usize) -> (u32, bool)) {
    out.reserve(n);
    let spare = out.spare_capacity_mut();
    let mut kept = 0;
    for k in 0..n {
        let (value, keep) = item(k);
        spare[kept].write(value);
        kept += keep as usize;
    }
    let len = out.len() + kept;
    // SAFETY: the first `kept` spare slots were written (kept <= n <= spare.len()).
    unsafe { out.set_len(len) };
}
