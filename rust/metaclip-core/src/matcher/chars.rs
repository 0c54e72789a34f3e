//! The substring automaton: Aho-Corasick over code points in a double array of our own,
//! whose tables are plain slices, so a matcher file is used in place (no copy per process).
//!
//! - Codes: each character of the patterns has a code `1..=K`, the most frequent first
//!   (0: in no pattern), found through a two-level table of 256-character pages.
//! - States: slot 0 is the root. The child of state `s` by code `c` is slot `base(s) + c`,
//!   valid iff its `check` is `s`. A state also holds its failure link and the head of its
//!   output chain: its own pattern's value, then those of its failure states.
//! - Leaves (no children) fail at once on every step: their failure link names the
//!   nearest state with children instead, and their base is that state's (see
//!   `skip_leaves`).
//!
//! One 16-byte slot per state, so a step reads one cache line: the child's `check`, then
//! (as the next state) its `base`, and its output head.

use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::mapped::Buf;

/// No state, no output.
pub const NONE: u32 = u32::MAX;
/// Added to a leaf's `base` by [`skip_leaves`] (real bases are below it).
const LEAF: u32 = 1 << 31;
/// 256-character pages covering every code point.
pub const PAGES: usize = 0x11_0000 >> 8;
/// Failed anchor slots after which searches for several children start further on: a
/// trade of build time (each failure is a probe) against holes left in the array.
const SKIP_AFTER: usize = 4096;

#[derive(Clone, Copy, Pod, Zeroable, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct State {
    base: u32,
    check: u32,
    fail: u32,
    out: u32,
}

const FREE: State = State {
    base: 0,
    check: NONE,
    fail: 0,
    out: NONE,
};

/// One link of an output chain.
#[derive(Clone, Copy, Pod, Zeroable, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Output {
    value: u32,
    next: u32,
}

/// The automaton's tables (owned after a build, or mapped from a matcher file).
pub struct CharAutomaton {
    pub(super) pages: Buf<u32>,
    pub(super) codes: Buf<u32>,
    pub(super) states: Buf<State>,
    pub(super) outputs: Buf<Output>,
}

impl CharAutomaton {
    /// Build from distinct, non-empty patterns and their values.
    pub fn build<'a>(patterns: impl IntoIterator<Item = (&'a str, u32)>) -> Result<Self> {
        let patterns: Vec<(&str, u32)> = patterns.into_iter().collect();
        let (pages, codes, code_of) = char_codes(&patterns);
        let mut seqs: Vec<(Vec<u32>, u32)> = patterns
            .iter()
            .map(|&(p, v)| (p.chars().map(|ch| code_of[&ch]).collect(), v))
            .collect();
        seqs.sort_unstable();
        let trie = Trie::new(&seqs)?;
        drop(seqs);
        let (mut states, order) = place(&trie)?;
        let outputs = link(&trie, &order, &mut states);
        skip_leaves(&order, &mut states);
        Ok(CharAutomaton {
            pages: Buf::from_vec(pages),
            codes: Buf::from_vec(codes),
            states: Buf::from_vec(states),
            outputs: Buf::from_vec(outputs),
        })
    }

    /// Check the tables' shapes (a loaded file); their contents are trusted, see `file`.
    pub(super) fn from_parts(
        pages: Buf<u32>,
        codes: Buf<u32>,
        states: Buf<State>,
        outputs: Buf<Output>,
    ) -> Result<Self> {
        if pages.len() != PAGES
            || codes.is_empty()
            || !codes.len().is_multiple_of(256)
            || states.is_empty()
        {
            return Err(Error::invalid("matcher file: bad substring automaton"));
        }
        Ok(CharAutomaton {
            pages,
            codes,
            states,
            outputs,
        })
    }

    /// Whether the tables are used in place from a file mapping.
    pub fn is_mapped(&self) -> bool {
        self.states.is_mapped() && self.outputs.is_mapped() && self.codes.is_mapped()
    }

    /// Bytes of the tables.
    pub fn memory_bytes(&self) -> usize {
        self.pages.as_bytes().len()
            + self.codes.as_bytes().len()
            + self.states.as_bytes().len()
            + self.outputs.as_bytes().len()
    }

    #[inline(always)]
    fn code(&self, ch: char) -> u32 {
        let c = ch as usize;
        let page = self.pages[c >> 8] as usize;
        self.codes[page * 256 + (c & 255)]
    }

    /// The state after reading `ch` in state `s`.
    #[inline(always)]
    fn step(&self, states: &[State], s: u32, ch: char) -> u32 {
        match self.code(ch) {
            0 => 0,
            c => next_state(states, s, c),
        }
    }

    /// Call `f` with the value of every pattern occurrence in `text` (overlapping ones
    /// included), in order of where they end.
    #[inline]
    pub fn for_each_match(&self, text: &str, mut f: impl FnMut(u32)) {
        let states = &*self.states;
        let mut s = 0u32;
        for ch in text.chars() {
            s = self.step(states, s, ch);
            self.outputs_of(states, s, &mut f);
        }
    }

    #[inline(always)]
    fn outputs_of(&self, states: &[State], s: u32, f: &mut impl FnMut(u32)) {
        let mut o = states[s as usize].out;
        while o != NONE {
            let link = self.outputs[o as usize];
            f(link.value);
            o = link.next;
        }
    }
}

/// The state after code `c` (not 0) in state `s`: its child by `c`, else that of its
/// failure state, and so on up to the root. Once `skip_leaves` has run, a leaf's step
/// starts at the nearest state with children among its failure states; before, no base
/// has the `LEAF` mark and every state is its own parent.
#[inline(always)]
fn next_state(states: &[State], mut s: u32, c: u32) -> u32 {
    loop {
        let st = states[s as usize];
        // A leaf: its `base` is that of the state its `fail` names, and the child is
        // that state's.
        let (base, parent) = if st.base >= LEAF {
            (st.base - LEAF, st.fail)
        } else {
            (st.base, s)
        };
        if base != 0 {
            let t = base.wrapping_add(c);
            if states.get(t as usize).is_some_and(|n| n.check == parent) {
                return t;
            }
        }
        if parent == 0 {
            return 0;
        }
        s = states[parent as usize].fail;
    }
}

/// Point each leaf (a state without children, other than the root) at the nearest state
/// with children among its failure states, and give it that state's base plus `LEAF`: a
/// step from a leaf, which always fails over to such a state, then skips the hops. On
/// generated Thai most characters leave a leaf.
fn skip_leaves(order: &[Placed], states: &mut [State]) {
    // Breadth first: a failure state is shallower, so it is done before the states that
    // fail to it.
    for &(_, s) in order.iter().skip(1) {
        let st = states[s as usize];
        if st.base != 0 {
            continue;
        }
        let f = states[st.fail as usize];
        let parent = if f.base >= LEAF { f.fail } else { st.fail };
        let base = states[parent as usize].base;
        let st = &mut states[s as usize];
        st.fail = parent;
        st.base = LEAF + base;
    }
}

/// (pages, codes, char -> code): codes by descending frequency in the patterns (ties by
/// code point), so the most used characters share the first pages' cache lines.
fn char_codes(patterns: &[(&str, u32)]) -> (Vec<u32>, Vec<u32>, HashMap<char, u32>) {
    let mut freq: HashMap<char, u64> = HashMap::new();
    for (p, _) in patterns {
        for ch in p.chars() {
            *freq.entry(ch).or_default() += 1;
        }
    }
    let mut chars: Vec<(char, u64)> = freq.into_iter().collect();
    chars.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let code_of: HashMap<char, u32> = chars
        .iter()
        .enumerate()
        .map(|(i, &(ch, _))| (ch, i as u32 + 1))
        .collect();
    let mut by_point: Vec<char> = chars.iter().map(|&(ch, _)| ch).collect();
    by_point.sort_unstable();
    let mut pages = vec![0u32; PAGES];
    let mut codes = vec![0u32; 256]; // page 0: no character has a code
    for ch in by_point {
        let c = ch as usize;
        if pages[c >> 8] == 0 {
            pages[c >> 8] = (codes.len() / 256) as u32;
            codes.resize(codes.len() + 256, 0);
        }
        codes[pages[c >> 8] as usize * 256 + (c & 255)] = code_of[&ch];
    }
    (pages, codes, code_of)
}

/// The patterns' trie, nodes in preorder; each node's children in increasing code order.
struct Trie {
    code: Vec<u32>,
    value: Vec<u32>,
    /// Children of node `u`: `child[child_start[u]..child_start[u + 1]]`.
    child_start: Vec<u32>,
    child: Vec<u32>,
}

impl Trie {
    /// From code sequences sorted and distinct.
    fn new(seqs: &[(Vec<u32>, u32)]) -> Result<Self> {
        let mut parent = vec![NONE];
        let mut code = vec![0u32];
        let mut value = vec![NONE];
        let mut path: Vec<u32> = vec![0];
        let mut prev: &[u32] = &[];
        for (seq, v) in seqs {
            let common = prev.iter().zip(seq).take_while(|(a, b)| a == b).count();
            path.truncate(common + 1);
            for &c in &seq[common..] {
                let id = u32::try_from(parent.len())
                    .ok()
                    .filter(|&id| id < NONE)
                    .ok_or_else(|| Error::invalid("substring automaton: too many states"))?;
                parent.push(*path.last().unwrap_or(&0));
                code.push(c);
                value.push(NONE);
                path.push(id);
            }
            value[*path.last().unwrap_or(&0) as usize] = *v;
            prev = seq;
        }
        let n = parent.len();
        let mut child_start = vec![0u32; n + 1];
        for &p in &parent[1..] {
            child_start[p as usize + 1] += 1;
        }
        for i in 0..n {
            child_start[i + 1] += child_start[i];
        }
        let mut fill = child_start.clone();
        let mut child = vec![0u32; n - 1];
        for (u, &p) in parent.iter().enumerate().skip(1) {
            child[fill[p as usize] as usize] = u as u32;
            fill[p as usize] += 1;
        }
        Ok(Trie {
            code,
            value,
            child_start,
            child,
        })
    }

    fn children(&self, u: u32) -> &[u32] {
        &self.child
            [self.child_start[u as usize] as usize..self.child_start[u as usize + 1] as usize]
    }
}

/// Slots of the double array: used bits and the lowest slot that may be free.
struct Slots {
    states: Vec<State>,
    used: Vec<u64>,
    head: usize,
    wide_from: usize,
}

impl Slots {
    fn is_used(&self, i: usize) -> bool {
        self.used
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    fn take(&mut self, i: usize) {
        if i >= self.states.len() {
            self.states.resize(i + 1, FREE);
            self.used.resize(i / 64 + 1, 0);
        }
        self.used[i / 64] |= 1 << (i % 64);
    }

    /// The first free slot at or after `i`.
    fn next_free(&self, i: usize) -> usize {
        let mut w = i / 64;
        let mut bits = match self.used.get(w) {
            Some(&b) => !b & (!0u64 << (i % 64)),
            None => return i,
        };
        while bits == 0 {
            w += 1;
            match self.used.get(w) {
                Some(&b) => bits = !b,
                None => return w * 64,
            }
        }
        w * 64 + bits.trailing_zeros() as usize
    }

    /// A base for children with these sorted codes: the first anchor slot (where the
    /// smallest code goes) at which all fit. One child takes the lowest free slot; several
    /// search from `wide_from`, which moves past slots where such searches kept failing,
    /// so the holes left behind are for one-child nodes.
    fn find_base(&mut self, codes: &[u32]) -> usize {
        let first = codes[0] as usize;
        self.head = self.next_free(self.head);
        let from = if codes.len() == 1 {
            self.head
        } else {
            self.wide_from.max(self.head)
        };
        let fits = |s: &Self, b: usize| codes.iter().all(|&c| !s.is_used(b + c as usize));
        let mut anchor = self.next_free(from.max(first + 1));
        let mut tries = 0;
        while !fits(self, anchor - first) {
            anchor = self.next_free(anchor + 1);
            tries += 1;
        }
        if tries > SKIP_AFTER {
            self.wide_from = anchor;
        }
        anchor - first
    }
}

/// (trie node, its slot).
type Placed = (u32, u32);

/// Place the trie's nodes in the double array; returns the states (base and check set)
/// and the (node, slot) pairs in breadth-first order.
///
/// Bases are chosen shallow nodes first, so the states most walks visit sit together at
/// the front of the array.
fn place(trie: &Trie) -> Result<(Vec<State>, Vec<Placed>)> {
    let too_big = || Error::invalid("substring automaton: too many states");
    let n = trie.code.len();
    let mut inner: Vec<u32> = (0..n as u32)
        .filter(|&u| !trie.children(u).is_empty())
        .collect();
    let mut depth = vec![0u32; n];
    for u in 0..n as u32 {
        for &k in trie.children(u) {
            depth[k as usize] = depth[u as usize] + 1;
        }
    }
    inner.sort_by_key(|&u| depth[u as usize]); // stable: preorder within a depth
    let mut slots = Slots {
        states: vec![FREE],
        used: vec![1],
        head: 1,
        wide_from: 1,
    };
    let mut base = vec![0u32; n];
    let mut codes: Vec<u32> = Vec::new();
    for &u in &inner {
        codes.clear();
        codes.extend(trie.children(u).iter().map(|&k| trie.code[k as usize]));
        let b = slots.find_base(&codes);
        for &c in &codes {
            slots.take(b + c as usize);
        }
        base[u as usize] = u32::try_from(b).map_err(|_| too_big())?;
    }
    if slots.states.len() >= LEAF as usize {
        return Err(too_big());
    }
    let mut states = slots.states;
    let mut order: Vec<Placed> = Vec::with_capacity(n);
    order.push((0, 0));
    let mut i = 0;
    while i < order.len() {
        let (u, su) = order[i];
        i += 1;
        let b = base[u as usize];
        states[su as usize].base = b;
        for &k in trie.children(u) {
            let t = b + trie.code[k as usize];
            states[t as usize].check = su;
            order.push((k, t));
        }
    }
    Ok((states, order))
}

/// Failure links and output chains, breadth first (a state's failure state is shallower,
/// so it is done first); returns the output links.
fn link(trie: &Trie, order: &[Placed], states: &mut [State]) -> Vec<Output> {
    let mut outputs = Vec::new();
    for &(u, su) in order {
        let base = states[su as usize].base;
        for &k in trie.children(u) {
            let c = trie.code[k as usize];
            let sk = base + c;
            let fail = if su == 0 {
                0
            } else {
                next_state(states, states[su as usize].fail, c)
            };
            let inherited = states[fail as usize].out;
            let value = trie.value[k as usize];
            let out = if value == NONE {
                inherited
            } else {
                outputs.push(Output {
                    value,
                    next: inherited,
                });
                outputs.len() as u32 - 1
            };
            let s = &mut states[sk as usize];
            s.fail = fail;
            s.out = out;
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(patterns: &[&str], text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, ch) in text.char_indices() {
            let stop = i + ch.len_utf8();
            for (v, p) in patterns.iter().enumerate() {
                if text[..stop].ends_with(p) {
                    out.push(v as u32);
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn found(ac: &CharAutomaton, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        ac.for_each_match(text, |v| out.push(v));
        out.sort_unstable();
        out
    }

    #[test]
    fn every_occurrence_like_a_scan() {
        let patterns = [
            "he",
            "she",
            "his",
            "hers",
            "中国",
            "国",
            "中国人",
            " 中",
            "ไทย",
            "ย ",
            "a",
            "aa",
            "aaa",
        ];
        let ac =
            CharAutomaton::build(patterns.iter().enumerate().map(|(i, p)| (*p, i as u32))).unwrap();
        for text in [
            "ushers",
            " 中国人 ไทย ",
            "aaaa",
            "",
            "no match here",
            "中中国国人",
            "ไทยไทย ",
        ] {
            assert_eq!(found(&ac, text), naive(&patterns, text), "{text:?}");
        }
    }

    #[test]
    fn many_children_and_deep_chains() {
        // Thousands of distinct first characters (a wide root) and long shared prefixes.
        let mut owned: Vec<String> = (0..3000u32)
            .map(|i| char::from_u32(0x4E00 + i).unwrap().to_string())
            .collect();
        owned.extend((1..40).map(|n| "ก".repeat(n)));
        owned.extend((0..500u32).map(|i| {
            let a = char::from_u32(0x4E00 + i % 7).unwrap();
            let b = char::from_u32(0x4E00 + i).unwrap();
            format!("{a}{b}{a}")
        }));
        owned.sort();
        owned.dedup();
        let patterns: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        let ac =
            CharAutomaton::build(patterns.iter().enumerate().map(|(i, p)| (*p, i as u32))).unwrap();
        let text: String = "กกกกก一丁七一丄一 กก一万一".repeat(3);
        assert_eq!(found(&ac, &text), naive(&patterns, &text));
    }

    #[test]
    fn random_small_alphabets_like_a_scan() {
        // Few letters and short patterns: leaves that fail to leaves, states that fail
        // all the way to the root, and long output chains, in every combination.
        let mut state = 0x5eed_u64;
        let mut next = move |n: u64| {
            state = crate::sample::splitmix64(state);
            state % n
        };
        let letters = ['a', 'b', 'c', 'ก'];
        for _ in 0..300 {
            let mut owned: Vec<String> = (0..1 + next(12))
                .map(|_| {
                    (0..1 + next(4))
                        .map(|_| letters[next(4) as usize])
                        .collect()
                })
                .collect();
            owned.sort();
            owned.dedup();
            let patterns: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
            let ac = CharAutomaton::build(patterns.iter().enumerate().map(|(i, p)| (*p, i as u32)))
                .unwrap();
            for _ in 0..5 {
                let text: String = (0..next(30)).map(|_| letters[next(4) as usize]).collect();
                assert_eq!(
                    found(&ac, &text),
                    naive(&patterns, &text),
                    "{patterns:?} {text:?}"
                );
            }
        }
    }
}
