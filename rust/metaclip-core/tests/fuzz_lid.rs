//! A mutation fuzzer for the native fastText reader (issue #19 item 12): a crafted or corrupt
//! model must be an `Error::Model` naming the file, or a usable model; never a panic, an
//! abort or an allocation out of proportion to the file.
//!
//! It mutates the bytes of the real lid.176.ftz (`METACLIP_LID_MODEL`; the model is CC BY-SA
//! and not in this repository, so without it the test does nothing): byte flips and sets,
//! truncations, deletions and insertions, and targeted writes of interesting values into
//! the header and size fields (found by walking the real file's layout). Each mutant is
//! loaded with a counting allocator; a loaded model predicts a few texts.
//!
//! Every mutant is a *recipe* (a list of operations, printable and parseable), so a
//! finding is kept as one line of `tests/data/lid_fuzz_regressions.txt` and replayed here,
//! never as a copy of the model.
//!
//! `cargo test -p metaclip-core --test fuzz_lid` replays the regressions and runs a few
//! dozen mutants. `bench/fuzz_lid.py` runs it for minutes (release build, address-space
//! limit, restarts after an abort); the knobs are environment variables:
//! `METACLIP_FUZZ_SECS` (run for this long instead of `METACLIP_FUZZ_ITERS` mutants),
//! `METACLIP_FUZZ_SEED`, `METACLIP_FUZZ_OUT` (a folder: `current.txt` holds the recipe
//! being loaded, so a run that aborts leaves it behind; `findings.txt` gets one line per
//! finding; `stats.txt` the running totals).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metaclip_core::lid::fasttext::{Model, Scratch};
use metaclip_core::Error;

// ---------------------------------------------------------------------------------------
// Allocation accounting (per thread: the mutant is loaded on the test's own thread).

/// One allocation bigger than this aborts the process at once (the allocator refuses it),
/// as a stand-in for the machine running out of memory.
const HARD_CAP: usize = 2 << 30;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static BIGGEST: Cell<usize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get().saturating_add(size);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
    let _ = BIGGEST.try_with(|b| b.set(b.get().max(size)));
}

fn on_free(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

// SAFETY: every call forwards to `System` with the same layout; the counters are plain
// thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            return std::ptr::null_mut();
        }
        on_alloc(layout.size());
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            return std::ptr::null_mut();
        }
        on_alloc(layout.size());
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HARD_CAP {
            return std::ptr::null_mut();
        }
        on_free(layout.size());
        on_alloc(new_size);
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Start measuring: peak live bytes and biggest single allocation from now on.
fn measure_start() {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    BIGGEST.with(|b| b.set(0));
}

/// (peak bytes above `base`, biggest single allocation) since `measure_start`.
fn measure_end(base: usize) -> (usize, usize) {
    (
        PEAK.with(Cell::get).saturating_sub(base),
        BIGGEST.with(Cell::get),
    )
}

/// The most a load may allocate for a file of `len` bytes: two dequantized copies of the
/// matrices (64 bytes of floats per file byte, see `lid/fasttext/format.rs`), plus tables
/// of a few bytes per file byte, plus slack. Anything above it is a finding.
fn alloc_bound(len: usize) -> usize {
    len * (2 * 64 + 32) + (1 << 20)
}

// ---------------------------------------------------------------------------------------
// A small deterministic RNG (SplitMix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

// ---------------------------------------------------------------------------------------
// Mutation recipes.

#[derive(Clone, Debug, PartialEq)]
enum Op {
    /// XOR one byte.
    Flip { at: usize, mask: u8 },
    /// Overwrite bytes (a little-endian value, or raw bytes).
    Set { at: usize, bytes: Vec<u8> },
    /// Keep the first `len` bytes.
    Trunc { len: usize },
    /// Remove `len` bytes at `at`.
    Del { at: usize, len: usize },
    /// Insert bytes at `at`.
    Ins { at: usize, bytes: Vec<u8> },
}

impl Op {
    fn apply(&self, b: &mut Vec<u8>) {
        match self {
            Op::Flip { at, mask } => {
                if let Some(x) = b.get_mut(*at) {
                    *x ^= mask;
                }
            }
            Op::Set { at, bytes } => {
                for (k, v) in bytes.iter().enumerate() {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = *v;
                    }
                }
            }
            Op::Trunc { len } => b.truncate(*len),
            Op::Del { at, len } => {
                let at = (*at).min(b.len());
                let end = at.saturating_add(*len).min(b.len());
                b.drain(at..end);
            }
            Op::Ins { at, bytes } => {
                let at = (*at).min(b.len());
                b.splice(at..at, bytes.iter().copied());
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Flip { at, mask } => write!(f, "flip@{at}^{mask:02x}"),
            Op::Set { at, bytes } => write!(f, "set@{at}={}", hex(bytes)),
            Op::Trunc { len } => write!(f, "trunc={len}"),
            Op::Del { at, len } => write!(f, "del@{at}+{len}"),
            Op::Ins { at, bytes } => write!(f, "ins@{at}={}", hex(bytes)),
        }
    }
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        let s = s.trim();
        if let Some(len) = s.strip_prefix("trunc=") {
            return Some(Op::Trunc {
                len: len.parse().ok()?,
            });
        }
        let (kind, rest) = s.split_once('@')?;
        match kind {
            "flip" => {
                let (at, mask) = rest.split_once('^')?;
                Some(Op::Flip {
                    at: at.parse().ok()?,
                    mask: u8::from_str_radix(mask, 16).ok()?,
                })
            }
            "set" | "ins" => {
                let (at, bytes) = rest.split_once('=')?;
                let (at, bytes) = (at.parse().ok()?, unhex(bytes)?);
                Some(if kind == "set" {
                    Op::Set { at, bytes }
                } else {
                    Op::Ins { at, bytes }
                })
            }
            "del" => {
                let (at, len) = rest.split_once('+')?;
                Some(Op::Del {
                    at: at.parse().ok()?,
                    len: len.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// A mutant: operations applied in order to the pristine model.
#[derive(Clone, Debug, Default)]
struct Recipe(Vec<Op>);

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<String> = self.0.iter().map(Op::to_string).collect();
        write!(f, "{}", ops.join(" "))
    }
}

impl Recipe {
    fn parse(s: &str) -> Option<Recipe> {
        s.split_whitespace()
            .map(Op::parse)
            .collect::<Option<_>>()
            .map(Recipe)
    }

    fn apply(&self, base: &[u8]) -> Vec<u8> {
        let mut b = base.to_vec();
        for op in &self.0 {
            op.apply(&mut b);
        }
        b
    }
}

// ---------------------------------------------------------------------------------------
// The layout of the pristine file: where the fields and regions are.

/// A field of the file: byte offset, width (1, 4 or 8) and its value there.
#[derive(Clone, Copy, Debug)]
struct Field {
    at: usize,
    width: usize,
    value: i64,
}

#[derive(Default)]
struct FileMap {
    fields: Vec<Field>,
    /// Byte ranges of the parts (header, dictionary, prune index, codes, ...).
    regions: Vec<(usize, usize)>,
    /// The prune index's entries (start, bytes).
    prune: Option<(usize, usize)>,
    /// The quantized input matrix.
    quant: Option<QuantAt>,
}

/// Where the quantized input matrix's fields are.
#[derive(Clone, Copy, Default)]
struct QuantAt {
    qnorm: usize,
    m: usize,
    codesize: usize,
    /// The codes (the product quantizer's header follows them).
    codes: usize,
    /// The norm quantizer's header.
    npq: Option<usize>,
}

/// Header offsets: wordNgrams and bucket (i32 arguments), prune_size (i64).
const WORD_NGRAMS_AT: usize = 28;
const BUCKET_AT: usize = 40;
const PRUNE_SIZE_AT: usize = 84;

/// Walk a fastText supervised model (version 12) and note its fields. Only for the
/// pristine file; stops quietly where the layout is not what it expects.
fn walk(d: &[u8]) -> FileMap {
    let mut l = FileMap::default();
    let mut p = 0usize;
    let rd = |p: &mut usize, w: usize, l: &mut FileMap| -> Option<i64> {
        let s = d.get(*p..*p + w)?;
        let v = match w {
            1 => i64::from(s[0]),
            4 => i64::from(i32::from_le_bytes(s.try_into().ok()?)),
            _ => i64::from_le_bytes(s.try_into().ok()?),
        };
        l.fields.push(Field {
            at: *p,
            width: w,
            value: v,
        });
        *p += w;
        Some(v)
    };
    let mut go = || -> Option<()> {
        for _ in 0..14 {
            rd(&mut p, 4, &mut l)?;
        }
        p += 8; // t (f64)
        let size = rd(&mut p, 4, &mut l)?;
        rd(&mut p, 4, &mut l)?;
        rd(&mut p, 4, &mut l)?;
        rd(&mut p, 8, &mut l)?;
        let prune = rd(&mut p, 8, &mut l)?;
        l.regions.push((0, p));
        let start = p;
        for i in 0..size {
            let end = p + d.get(p..)?.iter().position(|&b| b == 0)?;
            p = end + 1;
            // Every label's count and kind; a sample of the words'.
            if i % 97 == 0 || i >= size - 200 {
                rd(&mut p, 8, &mut l)?;
                rd(&mut p, 1, &mut l)?;
            } else {
                p += 9;
            }
        }
        l.regions.push((start, p));
        if prune > 0 {
            let start = p;
            for i in 0..prune {
                if i % 1013 == 0 || i == prune - 1 {
                    rd(&mut p, 4, &mut l)?;
                    rd(&mut p, 4, &mut l)?;
                } else {
                    p += 8;
                }
            }
            l.regions.push((start, p));
            l.prune = Some((start, p - start));
        }
        for matrix in 0..2 {
            let start = p;
            let quant = rd(&mut p, 1, &mut l)?;
            if quant != 0 {
                let mut at = QuantAt {
                    qnorm: p,
                    m: p + 1,
                    codesize: p + 17,
                    codes: p + 21,
                    npq: None,
                };
                let qnorm = rd(&mut p, 1, &mut l)?;
                let m = rd(&mut p, 8, &mut l)?;
                rd(&mut p, 8, &mut l)?;
                let codesize = rd(&mut p, 4, &mut l)?;
                l.regions.push((start, p));
                l.regions.push((p, p + codesize as usize));
                p += codesize as usize;
                let pq = p;
                let dim = rd(&mut p, 4, &mut l)?;
                for _ in 0..3 {
                    rd(&mut p, 4, &mut l)?;
                }
                l.regions.push((pq, p + dim as usize * 1024));
                p += dim as usize * 1024;
                if qnorm != 0 {
                    l.regions.push((p, p + m as usize));
                    p += m as usize;
                    let npq = p;
                    at.npq = Some(npq);
                    let dim = rd(&mut p, 4, &mut l)?;
                    for _ in 0..3 {
                        rd(&mut p, 4, &mut l)?;
                    }
                    l.regions.push((npq, p + dim as usize * 1024));
                    p += dim as usize * 1024;
                }
                if matrix == 0 {
                    l.quant = Some(at);
                }
            } else {
                let m = rd(&mut p, 8, &mut l)?;
                let n = rd(&mut p, 8, &mut l)?;
                l.regions.push((start, p));
                l.regions.push((p, p + (m * n * 4) as usize));
                p += (m * n * 4) as usize;
            }
        }
        Some(())
    };
    let _ = go();
    l.regions.retain(|&(a, b)| a < b && b <= d.len());
    if l.regions.is_empty() {
        l.regions.push((0, d.len()));
    }
    l
}

// ---------------------------------------------------------------------------------------
// The mutator.

fn interesting(rng: &mut Rng, f: &Field, len: usize) -> i64 {
    let v = f.value;
    let common = [
        0,
        1,
        2,
        -1,
        -2,
        255,
        256,
        (1 << 16) - 1,
        1 << 16,
        (1 << 16) + 1,
        1 << 24,
        1 << 30,
        i64::from(i32::MAX),
        i64::from(i32::MAX) - 1,
        i64::from(i32::MIN),
        1 << 31,
        1 << 32,
        999_999_999_999_999,
        1_000_000_000_000_000,
        i64::MAX,
        i64::MIN,
        len as i64,
        len as i64 / 8,
        len as i64 / 4,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v.wrapping_mul(2),
        v / 2,
        v.wrapping_mul(256),
        v.wrapping_neg(),
    ];
    match rng.below(4) {
        0 => rng.next() as i32 as i64,
        1 => v.wrapping_add(rng.below(64) as i64 - 32),
        _ => *rng.pick(&common),
    }
}

fn value_bytes(v: i64, width: usize) -> Vec<u8> {
    match width {
        1 => vec![v as u8],
        4 => (v as i32).to_le_bytes().to_vec(),
        _ => v.to_le_bytes().to_vec(),
    }
}

fn position(rng: &mut Rng, l: &FileMap, len: usize) -> usize {
    // Each region equally likely, so the small header parts get their share.
    let &(a, b) = rng.pick(&l.regions);
    (a + rng.below(b - a)).min(len.saturating_sub(1))
}

fn i32s(at: usize, v: &[i32]) -> Op {
    Op::Set {
        at,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Several fields changed together so that the file stays consistent past the first
/// checks (what single random changes rarely manage).
fn structured(rng: &mut Rng, l: &FileMap, len: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    match rng.below(3) {
        // Reshape the quantized input matrix: m rows of n columns, one sub-quantizer, so
        // that the codes and centroids still fit in the file.
        0 => {
            let Some(q) = l.quant else { return ops };
            let n = *rng.pick(&[1usize, 2, 15, 16, 17, 64, 255, 256, 457, 800]);
            let room = len.saturating_sub(q.codes + 16 + n * 1024);
            let m = match rng.below(3) {
                0 => room,
                1 => rng.below(room + 1),
                _ => (room / 2).max(1),
            };
            ops.push(Op::Set {
                at: q.qnorm,
                bytes: vec![0],
            });
            ops.push(Op::Set {
                at: q.m,
                bytes: [(m as i64).to_le_bytes(), (n as i64).to_le_bytes()].concat(),
            });
            ops.push(i32s(q.codesize, &[m as i32]));
            let dsub = rng.below(4) as i32;
            ops.push(i32s(q.codes + m, &[n as i32, 1, dsub, n as i32]));
            // The header's dim too, sometimes (else the width check fails after loading).
            if rng.below(2) == 0 {
                ops.push(i32s(8, &[n as i32]));
            }
        }
        // A different norm quantizer shape (consistent with its own dim).
        1 => {
            let Some(npq) = l.quant.and_then(|q| q.npq) else {
                return ops;
            };
            let nsubq = 1 + rng.below(3) as i32;
            let dsub = rng.below(3) as i32;
            let lastdsub = rng.below(3) as i32;
            ops.push(i32s(
                npq,
                &[(nsubq - 1) * dsub + lastdsub, nsubq, dsub, lastdsub],
            ));
        }
        // Drop the prune index (no n-gram rows), with other buckets and word n-grams.
        _ => {
            let Some((start, bytes)) = l.prune else {
                return ops;
            };
            let bucket = *rng.pick(&[0i32, 1, 2, 63, 64, 65, 42_765, i32::MAX]);
            ops.push(i32s(BUCKET_AT, &[bucket]));
            ops.push(i32s(WORD_NGRAMS_AT, &[1 + rng.below(4) as i32]));
            let prune_size: i64 = *rng.pick(&[0, -1]);
            ops.push(Op::Set {
                at: PRUNE_SIZE_AT,
                bytes: prune_size.to_le_bytes().to_vec(),
            });
            ops.push(Op::Del {
                at: start,
                len: bytes,
            });
        }
    }
    ops
}

fn mutate(rng: &mut Rng, l: &FileMap, len: usize) -> Recipe {
    let mut ops = Vec::new();
    let mut n = 1 + rng.below(3) + usize::from(rng.below(4) == 0) * rng.below(6);
    if rng.below(10) == 0 {
        ops = structured(rng, l, len);
        n = rng.below(2);
    }
    for _ in 0..n {
        let op = match rng.below(100) {
            0..=44 if !l.fields.is_empty() => {
                let f = *rng.pick(&l.fields);
                let v = if f.width == 1 {
                    *rng.pick(&[0, 1, 2, 3, 0x7f, 0x80, 0xff])
                } else {
                    interesting(rng, &f, len)
                };
                Op::Set {
                    at: f.at,
                    bytes: value_bytes(v, f.width),
                }
            }
            45..=69 => Op::Flip {
                at: position(rng, l, len),
                mask: 1 << rng.below(8),
            },
            70..=79 => Op::Set {
                at: position(rng, l, len),
                bytes: vec![*rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff]); 1 + rng.below(8)],
            },
            80..=87 => {
                // Truncate near a field or region boundary, or anywhere.
                let at = if rng.below(2) == 0 && !l.fields.is_empty() {
                    rng.pick(&l.fields).at + rng.below(9)
                } else {
                    rng.below(len)
                };
                Op::Trunc { len: at }
            }
            88..=93 => Op::Del {
                at: position(rng, l, len),
                len: 1 + rng.below(16),
            },
            _ => Op::Ins {
                at: position(rng, l, len),
                bytes: (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect(),
            },
        };
        ops.push(op);
    }
    Recipe(ops)
}

// ---------------------------------------------------------------------------------------
// Loading one mutant.

/// What loading a mutant did.
#[derive(Debug)]
enum Outcome {
    /// A model that predicts.
    Usable,
    /// An `Error::Model` naming the file: its message with numbers replaced by `N`.
    Error(String),
    /// A finding: a panic, a wrong error, a bad prediction, too much memory or time.
    Finding(String),
}

const NAME: &str = "mutant.ftz";

fn kind_of(err: &Error) -> Result<String, String> {
    let Error::Model { path, msg, .. } = err else {
        return Err(format!("not a model error: {err:?}"));
    };
    if path != NAME
        || !err
            .to_string()
            .starts_with("mutant.ftz:0: fastText model, byte ")
    {
        return Err(format!("error does not name the file: {err}"));
    }
    let mut kind = String::new();
    let mut digits = false;
    for c in msg.chars() {
        if c.is_ascii_digit() {
            if !digits {
                kind.push('N');
            }
            digits = true;
        } else {
            digits = false;
            kind.push(c);
        }
    }
    Ok(kind.replace("-N", "N"))
}

const TEXTS: &[&str] = &[
    "Bonjour tout le monde",
    "",
    "x",
    "Привет мир, как дела?",
    "日本語のテキスト",
    "__label__en hello",
    "a b c d e f g h i j k l m n o p",
    "\u{0}\u{1}\t\n \u{ffff} \u{10ffff}",
];

fn try_model(bytes: &[u8]) -> Outcome {
    let long = "abcdefghij ".repeat(300);
    let result = std::panic::catch_unwind(|| -> Result<Option<String>, String> {
        let model = match Model::from_bytes(bytes, NAME) {
            Ok(m) => m,
            Err(e) => return kind_of(&e).map(Some),
        };
        let n = model.labels().len();
        if n == 0 {
            return Err("a model without labels".into());
        }
        let _ = model.memory_bytes();
        let mut s = Scratch::default();
        for t in TEXTS.iter().copied().chain([long.as_str()]) {
            if let Some((i, p)) = model.predict(t.as_bytes(), &mut s) {
                // NaN is allowed: a mutant's floats can be anything; it is never chosen.
                if i >= n || !(p.is_nan() || (0.0..=1.0).contains(&p)) {
                    return Err(format!("prediction ({i}, {p}) for {n} labels"));
                }
            }
        }
        Ok(None)
    });
    match result {
        Ok(Ok(None)) => Outcome::Usable,
        Ok(Ok(Some(kind))) => Outcome::Error(kind),
        Ok(Err(finding)) => Outcome::Finding(finding),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Outcome::Finding(format!("panic: {msg}"))
        }
    }
}

thread_local! {
    /// The highest peak of a load that was not a finding, as (bytes, file length).
    static MAX_PEAK: Cell<(usize, usize)> = const { Cell::new((0, 1)) };
}

/// Load one mutant, measuring memory and time; a memory or time overrun is a finding.
fn run_one(bytes: &[u8], slow: Duration) -> Outcome {
    let base = LIVE.with(Cell::get);
    measure_start();
    let t = Instant::now();
    let out = try_model(bytes);
    let took = t.elapsed();
    let (peak, biggest) = measure_end(base);
    if let Outcome::Finding(_) = out {
        return out;
    }
    if peak > alloc_bound(bytes.len()) {
        return Outcome::Finding(format!(
            "allocated {peak} bytes at peak (biggest {biggest}) for a {}-byte file",
            bytes.len()
        ));
    }
    if took > slow {
        return Outcome::Finding(format!("took {:.1} s", took.as_secs_f64()));
    }
    MAX_PEAK.with(|m| {
        if peak > m.get().0 {
            m.set((peak, bytes.len()));
        }
    });
    out
}

// ---------------------------------------------------------------------------------------
// The driver.

fn model_path() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("METACLIP_LID_MODEL")?);
    p.is_file().then_some(p)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const REGRESSIONS: &str = include_str!("data/lid_fuzz_regressions.txt");

/// The regression recipes: (name, recipe, expected error substring or `ok`).
fn regressions() -> Vec<(String, Recipe, String)> {
    REGRESSIONS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(parts.len(), 3, "bad regression line: {l}");
            let recipe = Recipe::parse(parts[1]).expect("a parseable recipe");
            (parts[0].to_string(), recipe, parts[2].to_string())
        })
        .collect()
}

#[test]
fn recipes_round_trip() {
    let mut rng = Rng(7);
    let l = walk(&[]);
    for _ in 0..200 {
        let r = mutate(&mut rng, &l, 1000);
        let back = Recipe::parse(&r.to_string()).expect("parses");
        assert_eq!(back.0, r.0);
    }
    assert!(!regressions().is_empty());
}

#[test]
fn lid176_regressions_replay() {
    let Some(path) = model_path() else {
        eprintln!("METACLIP_LID_MODEL not set: lid.176 fuzz regressions skipped");
        return;
    };
    let base = std::fs::read(&path).expect("model readable");
    for (name, recipe, want) in regressions() {
        let got = run_one(&recipe.apply(&base), Duration::from_secs(60));
        match (&got, want.as_str()) {
            (Outcome::Usable, "ok") => {}
            (Outcome::Error(kind), want) if kind.contains(want) => {}
            _ => panic!("{name} ({recipe}): want {want:?}, got {got:?}"),
        }
    }
}

#[derive(Default)]
struct Stats {
    iterations: u64,
    usable: u64,
    errors: BTreeMap<String, u64>,
    findings: u64,
}

impl Stats {
    fn write(&self, out: &Path, seed: u64, secs: f64) {
        let (peak, len) = MAX_PEAK.with(Cell::get);
        let mut s = format!(
            "seed={seed} seconds={secs:.0} iterations={} usable={} errors={} kinds={} \
             findings={} max_peak={peak} max_peak_file={len}\n",
            self.iterations,
            self.usable,
            self.errors.values().sum::<u64>(),
            self.errors.len(),
            self.findings
        );
        for (k, n) in &self.errors {
            s += &format!("{n}\t{k}\n");
        }
        let _ = std::fs::write(out.join(format!("stats-{seed}.txt")), s);
    }
}

#[test]
fn lid176_mutants() {
    let Some(path) = model_path() else {
        eprintln!("METACLIP_LID_MODEL not set: lid.176 fuzzing skipped");
        return;
    };
    let base = std::fs::read(&path).expect("model readable");
    let layout = walk(&base);
    assert!(layout.fields.len() > 100, "lid.176 layout not recognised");
    let secs = env_num("METACLIP_FUZZ_SECS", 0);
    let iters = env_num("METACLIP_FUZZ_ITERS", 30);
    let seed = env_num("METACLIP_FUZZ_SEED", 1);
    let out = std::env::var_os("METACLIP_FUZZ_OUT").map(PathBuf::from);
    if let Some(out) = &out {
        std::fs::create_dir_all(out).expect("output folder");
    }
    // Unoptimised builds are ~20× slower.
    let slow = Duration::from_secs(if cfg!(debug_assertions) { 60 } else { 5 });
    let mut rng = Rng(seed);
    let mut stats = Stats::default();
    let mut findings = Vec::new();
    let start = Instant::now();
    let mut last_write = Instant::now();
    loop {
        let done = if secs > 0 {
            start.elapsed().as_secs() >= secs
        } else {
            stats.iterations >= iters
        };
        if done {
            break;
        }
        let recipe = mutate(&mut rng, &layout, base.len());
        let bytes = recipe.apply(&base);
        if let Some(out) = &out {
            // Left behind if this mutant aborts the process.
            std::fs::write(out.join("current.txt"), recipe.to_string()).expect("write");
        }
        stats.iterations += 1;
        match run_one(&bytes, slow) {
            Outcome::Usable => stats.usable += 1,
            Outcome::Error(kind) => *stats.errors.entry(kind).or_default() += 1,
            Outcome::Finding(what) => {
                stats.findings += 1;
                let line = format!("{what} | {recipe}");
                eprintln!("FINDING {line}");
                if let Some(out) = &out {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(out.join("findings.txt"))
                        .expect("findings file");
                    writeln!(f, "{line}").expect("write");
                }
                findings.push(line);
            }
        }
        if let Some(out) = &out {
            if last_write.elapsed() > Duration::from_secs(2) {
                stats.write(out, seed, start.elapsed().as_secs_f64());
                last_write = Instant::now();
            }
        }
    }
    if let Some(out) = &out {
        stats.write(out, seed, start.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(out.join("current.txt"));
    }
    eprintln!(
        "lid.176 fuzz: {} mutants, {} usable, {} errors of {} kinds, {} findings",
        stats.iterations,
        stats.usable,
        stats.errors.values().sum::<u64>(),
        stats.errors.len(),
        findings.len()
    );
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
}
