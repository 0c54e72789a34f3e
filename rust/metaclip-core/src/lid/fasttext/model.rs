//! The loaded model and its top-1 prediction: the work done once at load time (vocabulary
//! table, per-word row sums, prune bitmap, Huffman tree) and the per-text forward pass.
//! One file (~500 lines) because the layout and the forward pass share every table: split,
//! each half would need the other's private fields.

use super::format::ModelFile;
use super::{EOS, LABEL_PREFIX};

/// Loss functions we can predict with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loss {
    Hs,
    Softmax,
}

/// One node of the hierarchical-softmax (Huffman) tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    left: i32,
    right: i32,
}

/// Bucket id → row rank (the rank of the id among the distinct ids).
pub(super) enum PruneIndex {
    /// A bitmap over all buckets with a running count per 64-bit word: one bit test for
    /// the usual miss. 12 bytes per 64 buckets (lid.176: 2M buckets, 375 kB).
    Bitmap { bits: Vec<u64>, rank: Vec<u32> },
    /// The sorted distinct ids, binary-searched: for a bucket count whose bitmap would be
    /// bigger than the model file (the bitmap's size is not tied to what the file holds).
    Sorted(Vec<u32>),
}

impl PruneIndex {
    /// The index of `ids` (each below `bucket`); a bitmap if it takes at most `max_bytes`.
    pub(super) fn new(bucket: usize, mut ids: Vec<u32>, max_bytes: usize) -> Self {
        ids.sort_unstable();
        ids.dedup();
        let words = bucket.div_ceil(64);
        if words.saturating_mul(12) > max_bytes {
            ids.shrink_to_fit();
            return PruneIndex::Sorted(ids);
        }
        let mut bits = vec![0u64; words];
        for &id in &ids {
            bits[id as usize >> 6] |= 1u64 << (id & 63);
        }
        let mut rank = Vec::with_capacity(bits.len());
        let mut total = 0u32;
        for w in &bits {
            rank.push(total);
            total += w.count_ones();
        }
        PruneIndex::Bitmap { bits, rank }
    }

    #[inline]
    pub(super) fn get(&self, id: u32) -> Option<usize> {
        match self {
            PruneIndex::Bitmap { bits, rank } => {
                let w = id as usize >> 6;
                let word = *bits.get(w)?;
                let bit = 1u64 << (id & 63);
                if word & bit == 0 {
                    return None;
                }
                Some(rank[w] as usize + (word & (bit - 1)).count_ones() as usize)
            }
            PruneIndex::Sorted(ids) => ids.binary_search(&id).ok(),
        }
    }

    /// Heap bytes held.
    fn memory_bytes(&self) -> usize {
        match self {
            PruneIndex::Bitmap { bits, rank } => bits.len() * 8 + rank.len() * 4,
            PruneIndex::Sorted(ids) => ids.len() * 4,
        }
    }
}

/// Where the rows of hashed n-grams live.
enum Buckets {
    /// No pruning: bucket id b is n-gram row b.
    Dense,
    /// Pruned (quantized models): only some buckets have a row.
    Pruned(PruneIndex),
    /// Pruned to nothing: n-grams contribute no rows.
    Empty,
}

/// A loaded fastText supervised model, ready for top-1 prediction.
pub struct Model {
    dim: usize,
    minn: usize,
    maxn: usize,
    word_ngrams: usize,
    bucket: u32,
    bucket_magic: u64,
    /// Vocabulary: open-addressed table of (fnv hash, word id + 1; 0 = empty).
    table: Vec<(u32, u32)>,
    word_data: Vec<u8>,
    word_offsets: Vec<u32>,
    eos: Option<u32>,
    /// Per word: sum of its rows (word row + n-gram rows), `dim` floats each.
    word_sums: Vec<f32>,
    word_nrows: Vec<u32>,
    /// Hashed n-gram rows, `dim` floats each.
    ngram_rows: Vec<f32>,
    buckets: Buckets,
    labels: Vec<String>,
    /// Output rows, `dim` floats each (hs: one per internal node; softmax: one per label).
    output: Vec<f32>,
    loss: Loss,
    tree: Vec<Node>,
}

/// Reusable per-thread buffers.
#[derive(Default)]
pub struct Scratch {
    hidden: Vec<f32>,
    word: Vec<u8>,
    hashes: Vec<i32>,
}

/// fastText's string hash: FNV-1a over bytes taken as *signed* chars.
#[inline]
fn fnv_step(h: u32, b: u8) -> u32 {
    (h ^ (b as i8 as i32 as u32)).wrapping_mul(16_777_619)
}

pub(super) const FNV_BASIS: u32 = 2_166_136_261;

#[inline]
pub(super) fn fnv(s: &[u8]) -> u32 {
    s.iter().fold(FNV_BASIS, |h, &b| fnv_step(h, b))
}

#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)
}

#[inline]
fn mix(h: u32) -> usize {
    (h.wrapping_mul(0x9E37_79B1) >> 7) as usize
}

impl Model {
    /// Lay out a parsed file for prediction.
    pub(super) fn new(file: ModelFile) -> Model {
        let ModelFile {
            dim,
            minn,
            maxn,
            word_ngrams,
            bucket,
            loss,
            nwords,
            word_data,
            word_offsets,
            labels,
            label_counts,
            dense,
            prune,
            input,
            output,
            file_len,
        } = file;
        // N-gram rows in our order.
        let row_of = |i: usize| &input[i * dim..(i + 1) * dim];
        let (buckets, ngram_rows) = if dense {
            (Buckets::Dense, input[nwords * dim..].to_vec())
        } else if prune.is_empty() {
            (Buckets::Empty, Vec::new())
        } else {
            let ids: Vec<u32> = prune.iter().map(|p| p.0).collect();
            let index = PruneIndex::new(bucket, ids, file_len);
            // At most as many rows as the input matrix has n-gram rows (format checks it).
            let mut ngram_rows = vec![0f32; prune.len() * dim];
            for &(from, to) in &prune {
                if let Some(rank) = index.get(from) {
                    ngram_rows[rank * dim..(rank + 1) * dim].copy_from_slice(row_of(nwords + to));
                }
            }
            (Buckets::Pruned(index), ngram_rows)
        };

        let mut model = Model {
            dim,
            minn,
            maxn,
            word_ngrams,
            bucket: bucket as u32,
            bucket_magic: (u64::MAX / bucket.max(1) as u64).wrapping_add(1),
            table: Vec::new(),
            word_data,
            word_offsets,
            eos: None,
            word_sums: vec![0f32; nwords * dim],
            word_nrows: vec![0; nwords],
            ngram_rows,
            buckets,
            labels,
            output,
            loss,
            tree: Vec::new(),
        };
        model.build_vocab();
        model.build_word_sums(&input);
        if loss == Loss::Hs {
            model.build_tree(&label_counts);
        }
        model
    }

    fn word(&self, i: usize) -> &[u8] {
        &self.word_data[self.word_offsets[i] as usize..self.word_offsets[i + 1] as usize]
    }

    fn nwords(&self) -> usize {
        self.word_offsets.len() - 1
    }

    fn build_vocab(&mut self) {
        let n = self.nwords();
        let cap = (n * 2).next_power_of_two().max(16);
        let mut table = vec![(0u32, 0u32); cap];
        for i in 0..n {
            let h = fnv(self.word(i));
            let mut s = mix(h) & (cap - 1);
            while table[s].1 != 0 {
                s = (s + 1) & (cap - 1);
            }
            // Duplicate words cannot occur in a valid model; the first one wins on lookup.
            table[s] = (h, i as u32 + 1);
        }
        self.table = table;
        self.eos = self.lookup(EOS, fnv(EOS));
    }

    #[inline]
    fn lookup(&self, w: &[u8], h: u32) -> Option<u32> {
        let mask = self.table.len() - 1;
        let mut s = mix(h) & mask;
        loop {
            let (th, id) = self.table[s];
            if id == 0 {
                return None;
            }
            if th == h && self.word(id as usize - 1) == w {
                return Some(id - 1);
            }
            s = (s + 1) & mask;
        }
    }

    #[inline]
    fn bucket_of(&self, h: u32) -> u32 {
        // Lemire's fast modulo: h % bucket for 32-bit h.
        let low = self.bucket_magic.wrapping_mul(h as u64);
        ((low as u128 * self.bucket as u128) >> 64) as u32
    }

    #[inline]
    fn ngram_row(&self, id: u32) -> Option<&[f32]> {
        let r = match &self.buckets {
            Buckets::Dense => id as usize,
            Buckets::Pruned(p) => p.get(id)?,
            Buckets::Empty => return None,
        };
        self.ngram_rows.get(r * self.dim..(r + 1) * self.dim)
    }

    /// Add the rows of the character n-grams of `<word>` (already wrapped) to `acc`.
    #[inline]
    fn add_subwords(&self, wrapped: &[u8], acc: &mut [f32], count: &mut u32) {
        let len = wrapped.len();
        for i in 0..len {
            if wrapped[i] & 0xC0 == 0x80 {
                continue;
            }
            let mut h = FNV_BASIS;
            let mut j = i;
            let mut n = 1;
            while j < len && n <= self.maxn {
                h = fnv_step(h, wrapped[j]);
                j += 1;
                while j < len && wrapped[j] & 0xC0 == 0x80 {
                    h = fnv_step(h, wrapped[j]);
                    j += 1;
                }
                if n >= self.minn && !(n == 1 && (i == 0 || j == len)) {
                    if let Some(row) = self.ngram_row(self.bucket_of(h)) {
                        add(acc, row);
                        *count += 1;
                    }
                }
                n += 1;
            }
        }
    }

    fn build_word_sums(&mut self, input: &[f32]) {
        let dim = self.dim;
        let mut sums = std::mem::take(&mut self.word_sums);
        let mut wrapped = Vec::new();
        for i in 0..self.nwords() {
            let acc = &mut sums[i * dim..(i + 1) * dim];
            acc.copy_from_slice(&input[i * dim..(i + 1) * dim]);
            let mut count = 1;
            if self.maxn > 0 && self.word(i) != EOS {
                wrapped.clear();
                wrapped.push(b'<');
                wrapped.extend_from_slice(self.word(i));
                wrapped.push(b'>');
                self.add_subwords(&wrapped, acc, &mut count);
            }
            self.word_nrows[i] = count;
        }
        self.word_sums = sums;
    }

    /// fastText's Huffman tree over label counts (labels are sorted by count, descending).
    fn build_tree(&mut self, counts: &[i64]) {
        let osz = counts.len();
        let mut count = vec![1e15 as i64; 2 * osz - 1];
        let mut tree = vec![
            Node {
                left: -1,
                right: -1
            };
            2 * osz - 1
        ];
        count[..osz].copy_from_slice(counts);
        let mut leaf = osz as i64 - 1;
        let mut node = osz;
        for i in osz..2 * osz - 1 {
            let mut mini = [0usize; 2];
            for m in mini.iter_mut() {
                if leaf >= 0 && count[leaf as usize] < count[node] {
                    *m = leaf as usize;
                    leaf -= 1;
                } else {
                    *m = node;
                    node += 1;
                }
            }
            tree[i] = Node {
                left: mini[0] as i32,
                right: mini[1] as i32,
            };
            // Leaf counts are in 0..1e15 (format checks it), so no unbuilt node (count
            // 1e15) is ever picked; sums of many can pass i64::MAX.
            count[i] = count[mini[0]].saturating_add(count[mini[1]]);
        }
        self.tree = tree;
    }

    /// Label names, in the model's order (without `__label__`).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let pruned = match &self.buckets {
            Buckets::Pruned(p) => p.memory_bytes(),
            _ => 0,
        };
        self.table.len() * 8
            + self.word_data.len()
            + self.word_offsets.len() * 4
            + (self.word_sums.len() + self.ngram_rows.len() + self.output.len()) * 4
            + self.word_nrows.len() * 4
            + pruned
            + self.tree.len() * 8
    }

    /// Top label index and its probability for one text, or None when the text gives the
    /// model nothing to go on (never happens for models with `</s>` in the vocabulary).
    pub fn predict(&self, text: &[u8], s: &mut Scratch) -> Option<(usize, f32)> {
        let dim = self.dim;
        s.hidden.clear();
        s.hidden.resize(dim, 0.0);
        s.hashes.clear();
        let mut count = 0u32;
        let mut pos = 0;
        let n = text.len();
        loop {
            while pos < n && is_space(text[pos]) {
                pos += 1;
            }
            if pos >= n {
                break;
            }
            let start = pos;
            while pos < n && !is_space(text[pos]) {
                pos += 1;
            }
            let token = &text[start..pos];
            let h = fnv(token);
            match self.lookup(token, h) {
                Some(id) => {
                    let id = id as usize;
                    add(&mut s.hidden, &self.word_sums[id * dim..(id + 1) * dim]);
                    count += self.word_nrows[id];
                }
                None => {
                    if token.starts_with(LABEL_PREFIX) {
                        continue;
                    }
                    if self.maxn > 0 {
                        s.word.clear();
                        s.word.push(b'<');
                        s.word.extend_from_slice(token);
                        s.word.push(b'>');
                        self.add_subwords(&s.word, &mut s.hidden, &mut count);
                    }
                }
            }
            s.hashes.push(h as i32);
        }
        // The end-of-line token fastText appends.
        if let Some(id) = self.eos {
            let id = id as usize;
            add(&mut s.hidden, &self.word_sums[id * dim..(id + 1) * dim]);
            count += self.word_nrows[id];
        }
        s.hashes.push(fnv(EOS) as i32);
        // A model with no buckets has no word n-gram rows (and `% 0` would panic).
        if self.word_ngrams > 1 && self.bucket > 0 {
            for i in 0..s.hashes.len() {
                let mut h = s.hashes[i] as i64 as u64;
                for j in i + 1..s.hashes.len().min(i + self.word_ngrams) {
                    h = h
                        .wrapping_mul(116_049_371)
                        .wrapping_add(s.hashes[j] as i64 as u64);
                    let id = (h % self.bucket as u64) as u32;
                    if let Some(row) = self.ngram_row(id) {
                        add(&mut s.hidden, row);
                        count += 1;
                    }
                }
            }
        }
        if count == 0 {
            return None;
        }
        let scale = (1.0f64 / count as f64) as f32;
        for x in s.hidden.iter_mut() {
            *x *= scale;
        }
        Some(match self.loss {
            Loss::Hs => self.predict_hs(&s.hidden),
            Loss::Softmax => self.predict_softmax(&s.hidden),
        })
    }

    #[inline]
    fn out_dot(&self, row: usize, hidden: &[f32]) -> f32 {
        let o = &self.output[row * self.dim..(row + 1) * self.dim];
        o.iter().zip(hidden).map(|(a, b)| a * b).sum()
    }

    fn predict_hs(&self, hidden: &[f32]) -> (usize, f32) {
        let osz = self.labels.len();
        let floor = std_log(0.0);
        let mut best = (f32::NEG_INFINITY, 0usize);
        // Depth-first, left before right, pruning paths that cannot beat the best leaf.
        let mut stack: [(usize, f32); 64] = [(0, 0.0); 64];
        let mut top = 1;
        stack[0] = (2 * osz - 2, 0.0);
        while top > 0 {
            top -= 1;
            let (node, score) = stack[top];
            if score < floor || score < best.0 {
                continue;
            }
            let t = self.tree[node];
            if t.left < 0 && t.right < 0 {
                if score > best.0 {
                    best = (score, node);
                }
                continue;
            }
            let f = self.out_dot(node - osz, hidden);
            let f = (1.0 / (1.0 + (-(f as f64)).exp())) as f32;
            if top + 2 > stack.len() {
                continue; // deeper than any Huffman tree over < 2^32 labels
            }
            // Push right first so that left is explored first.
            stack[top] = (t.right as usize, score + std_log(f));
            stack[top + 1] = (t.left as usize, score + std_log(1.0 - f));
            top += 2;
        }
        (best.1, best.0.exp().min(1.0))
    }

    fn predict_softmax(&self, hidden: &[f32]) -> (usize, f32) {
        let n = self.labels.len();
        let mut max = f32::NEG_INFINITY;
        let mut arg = 0;
        let mut z = Vec::with_capacity(n);
        for i in 0..n {
            let v = self.out_dot(i, hidden);
            if v > max {
                max = v;
                arg = i;
            }
            z.push(v);
        }
        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
        (arg, (1.0 / sum).min(1.0))
    }
}

#[inline]
fn std_log(x: f32) -> f32 {
    ((x as f64) + 1e-5).ln() as f32
}

#[inline]
fn add(acc: &mut [f32], row: &[f32]) {
    for (a, b) in acc.iter_mut().zip(row) {
        *a += b;
    }
}
