//! The fastText 0.9 file format (version 12), read into plain vectors: header arguments,
//! dictionary, optional prune index, input and output matrices (dense, or product-quantized
//! and dequantized here).
//!
//! Every size read from the file is bounded before anything is allocated for it, so a
//! crafted or corrupt file is an [`Error::Model`] naming the file, never a panic or a huge
//! allocation. With `L` the file's length in bytes:
//! - counts of items stored in the file (dictionary entries, prune index entries, codes,
//!   centroids, dense rows) are checked against the bytes left, so each costs O(L);
//! - the dequantized matrices (input and output together) may take at most
//!   [`MAX_EXPANSION`]` × L` bytes of `f32`: the one thing the file does not store at full
//!   size (fastText's default `dsub = 2` expands 8×; lid.176.ftz 3.4×);
//! - the tables built from them in `model` are no bigger than the input matrix (at least
//!   as many rows as words; a prune index no longer than the n-gram rows), and the
//!   bucket bitmap is used only when it is no bigger than `L` (else a sorted id list).
//!
//! Values that later index or divide are checked here too: `dim` and matrix widths are at
//! least 1, label counts are in `0..1e15` (the Huffman tree's sentinel), the norm
//! quantizer has one float per code; and a model with no buckets has no word n-grams.
//!
//! So loading takes at most about `2 × MAX_EXPANSION × L` bytes plus O(L): ~128 MB for a
//! 1 MB file, whatever its header says (lid.176.ftz, 0.9 MB, peaks under 10 MB).

use super::model::Loss;
use super::{LABEL_PREFIX, MAGIC, VERSION};
use crate::{Error, Result};

const KSUB: usize = 256;
/// The fewest bytes a dictionary entry takes: an empty word's NUL, its count, its kind.
const MIN_ENTRY_BYTES: usize = 1 + 8 + 1;
/// The bytes of a prune index entry: (bucket id, row), two `i32`.
const PRUNE_ENTRY_BYTES: usize = 8;
/// The most bytes of dequantized `f32` matrices per byte of the file (see the module doc):
/// room for `dsub` up to 16, 8× fastText's default.
pub(super) const MAX_EXPANSION: usize = 64;
/// fastText's Huffman tree uses this count for nodes not built yet; a label count must
/// be below it (and not negative) for the tree to be well formed.
const MAX_LABEL_COUNT: i64 = 1_000_000_000_000_000;

/// A parsed model file, checked for consistency (shapes, counts, indices).
pub(super) struct ModelFile {
    pub(super) dim: usize,
    pub(super) minn: usize,
    pub(super) maxn: usize,
    pub(super) word_ngrams: usize,
    pub(super) bucket: usize,
    pub(super) loss: Loss,
    pub(super) nwords: usize,
    /// The words' bytes, word i at `word_data[word_offsets[i]..word_offsets[i + 1]]`.
    pub(super) word_data: Vec<u8>,
    pub(super) word_offsets: Vec<u32>,
    /// Label names (without `__label__`) and their training counts.
    pub(super) labels: Vec<String>,
    pub(super) label_counts: Vec<i64>,
    /// Whether every bucket has its row (no prune index).
    pub(super) dense: bool,
    /// (bucket id, row after the words) of a pruned model; each row is in `input`.
    pub(super) prune: Vec<(u32, usize)>,
    /// Input matrix: rows of `dim` floats (words first, then n-gram rows).
    pub(super) input: Vec<f32>,
    /// Output matrix: one row of `dim` floats per label (softmax) or internal node (hs).
    pub(super) output: Vec<f32>,
    /// The file's length in bytes (caps what the model builds from it).
    pub(super) file_len: usize,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a str,
    /// Bytes of dequantized matrices still allowed ([`MAX_EXPANSION`] per file byte).
    dequant_left: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Model {
            path: self.path.to_string(),
            byte: self.pos,
            msg: msg.into(),
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

    /// A count of `v` items of at least `bytes_each` bytes each that the file must still
    /// hold (checked before anything is allocated for them).
    fn count(&mut self, what: &str, v: i64, max: i64, bytes_each: usize) -> Result<usize> {
        let n = self.size(what, v, max)?;
        let left = self.data.len() - self.pos;
        if n > left / bytes_each {
            return Err(self.err(format!(
                "bad {what}: {v} (the {left} bytes left hold at most {})",
                left / bytes_each
            )));
        }
        Ok(n)
    }

    /// Claim room for `n` dequantized floats (a matrix the file stores only as codes).
    fn dequant(&mut self, n: usize) -> Result<()> {
        let bytes = n.checked_mul(4).filter(|&b| b <= self.dequant_left);
        let Some(bytes) = bytes else {
            return Err(self.err(format!(
                "quantized matrix of {n} floats too big for a {}-byte file \
                 (at most {MAX_EXPANSION} bytes of floats per file byte)",
                self.data.len()
            )));
        };
        self.dequant_left -= bytes;
        Ok(())
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
    dim: usize,
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
        if nsubq == 0
            || (nsubq - 1)
                .checked_mul(dsub)
                .and_then(|x| x.checked_add(lastdsub))
                != Some(dim)
        {
            return Err(r.err("inconsistent product quantizer"));
        }
        let centroids = r.f32s(dim * KSUB)?;
        Ok(Pq {
            dim,
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

/// A matrix's (rows, columns), each bounded, with at least one column.
fn matrix_shape(r: &mut Reader<'_>) -> Result<(usize, usize)> {
    let m = r.i64()?;
    let n = r.i64()?;
    let m = r.size("rows", m, 1 << 31)?;
    let n = r.size("columns", n, 1 << 16)?;
    if n == 0 {
        return Err(r.err("bad columns: 0"));
    }
    Ok((m, n))
}

/// Read a matrix (dense or quantized) into dense rows.
fn load_matrix(r: &mut Reader<'_>, quant: bool) -> Result<(usize, usize, Vec<f32>)> {
    if !quant {
        let (m, n) = matrix_shape(r)?;
        let data = r.f32s(m.checked_mul(n).ok_or_else(|| r.err("size overflow"))?)?;
        return Ok((m, n, data));
    }
    let qnorm = r.u8()? != 0;
    let (m, n) = matrix_shape(r)?;
    let codesize = r.i32()?;
    let codesize = r.size("code size", codesize as i64, i32::MAX as i64)?;
    let codes = r.take(codesize)?;
    let pq = Pq::load(r)?;
    if Some(codesize) != m.checked_mul(pq.nsubq) || pq.dim != n {
        return Err(r.err("quantized matrix shape does not match its codes"));
    }
    let norms = if qnorm {
        let codes = r.take(m)?;
        let npq = Pq::load(r)?;
        // fastText's norm quantizer: one sub-quantizer of one float.
        if npq.nsubq != 1 || npq.lastdsub != 1 {
            return Err(r.err("bad norm quantizer (want one float per code)"));
        }
        codes.iter().map(|&c| npq.centroid(0, c)[0]).collect()
    } else {
        vec![1.0f32; m]
    };
    // m <= codesize (in the file) and n <= the centroids' floats / 256 (in the file): each
    // is O(L), but m × n is not; it has its own cap.
    r.dequant(m.checked_mul(n).ok_or_else(|| r.err("size overflow"))?)?;
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

/// Parse and check a model file (`name` is used in error messages).
pub(super) fn parse(data: &[u8], name: &str) -> Result<ModelFile> {
    let mut r = Reader {
        data,
        pos: 0,
        path: name,
        dequant_left: data.len().saturating_mul(MAX_EXPANSION),
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
    let [dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn, _lr] = a;
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
    if dim == 0 {
        return Err(r.err("bad dim: 0"));
    }
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
    let size = r.count("dictionary size", size as i64, 1 << 30, MIN_ENTRY_BYTES)?;
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
            let end = u32::try_from(word_data.len()).map_err(|_| r.err("vocabulary too big"))?;
            word_offsets.push(end);
        } else {
            if kind != 1 {
                return Err(r.err("word among the labels"));
            }
            if !(0..MAX_LABEL_COUNT).contains(&count) {
                return Err(r.err(format!("bad label count: {count}")));
            }
            let l = w.strip_prefix(LABEL_PREFIX).unwrap_or(w);
            labels.push(String::from_utf8_lossy(l).into_owned());
            label_counts.push(count);
        }
    }
    let mut prune = Vec::new();
    if prune_size > 0 {
        let n = r.count("prune index size", prune_size, 1 << 31, PRUNE_ENTRY_BYTES)?;
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

    // Every n-gram row the model will look up is in the input matrix, and the tables built
    // from it (a sum per word, a copy of each pruned n-gram's row) are no bigger than it.
    if rows < nwords {
        return Err(r.err("input matrix has fewer rows than words"));
    }
    let dense = prune_size < 0;
    if dense && rows != nwords + bucket {
        return Err(r.err("input matrix rows differ from words + buckets"));
    }
    if !dense && prune.len() > rows - nwords {
        return Err(r.err(format!(
            "prune index has {} entries for {} n-gram rows",
            prune.len(),
            rows - nwords
        )));
    }
    if !dense && prune.iter().any(|&(_, to)| nwords + to >= rows) {
        return Err(r.err("prune index points past the input matrix"));
    }
    Ok(ModelFile {
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
        file_len: data.len(),
    })
}
