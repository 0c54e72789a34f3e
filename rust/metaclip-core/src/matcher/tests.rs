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
    let expect: Vec<u32> = one.ids[one.offsets[100] as usize..one.offsets[200] as usize].to_vec();
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

#[test]
fn packed_texts_split_inside_a_character_are_invalid() {
    // The bytes together are valid UTF-8, but the offsets cut "é" (C3 A9) in two.
    let data = "dog é cat dog".as_bytes();
    let offsets = [0i64, 5, 10, 14];
    let packed = Packed::new(data, &offsets).unwrap();
    let m = Matcher::new(&["dog", "cat"], Mode::Mc1).unwrap();
    let csr = m.match_batch(&packed, 0..3, 1);
    assert_eq!(csr.invalid, vec![0, 1]);
    assert_eq!(csr.offsets, vec![0, 0, 0, 1]);
    // Cut at the character's ends, the same bytes are three valid texts.
    let offsets = [0i64, 4, 7, 14];
    let packed = Packed::new(data, &offsets).unwrap();
    let csr = m.match_batch(&packed, 0..3, 1);
    assert!(csr.invalid.is_empty());
    assert_eq!(csr.ids, vec![0, 0, 1]);
}

#[test]
fn packed_texts_match_like_a_list() {
    let texts = ["猫 dog", "", " cat, 猫", "dog dog é"];
    let data: Vec<u8> = texts.concat().into_bytes();
    let mut offsets = vec![0i64];
    for t in texts {
        offsets.push(offsets[offsets.len() - 1] + t.len() as i64);
    }
    let packed = Packed::new(&data, &offsets).unwrap();
    let m = Matcher::new(&["dog", "cat", "猫"], Mode::Mc2).unwrap();
    for range in [0..4, 1..3, 2..4] {
        let got = m.match_batch(&packed, range.clone(), 1);
        assert_eq!(got, m.match_batch(&texts[..], range, 1));
    }
}

/// A small deterministic generator (no dev-dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const PIECES: [&str; 14] = [
    "dog",
    "hot",
    "a",
    "相机",
    "カメラ",
    "新",
    "x,",
    "St.",
    "abcdefghij",
    "abcdefghijklmnopq",
    "ก",
    "Gas",
    "gas",
    "é",
];

fn random_phrase(rng: &mut Rng, max_words: u64) -> String {
    let n = 1 + rng.next() % max_words;
    let seps = [" ", " ", " ", "", "\t", "\u{3000}"];
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push_str(rng.pick(&seps));
        }
        s.push_str(rng.pick(&PIECES));
    }
    s
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("metaclip-test-{}-{name}", std::process::id()))
}

#[test]
fn loaded_file_matches_like_built() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (round, mode) in Mode::ALL.into_iter().cycle().take(9).enumerate() {
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<String> = (0..200 * (round + 1))
            .map(|_| random_phrase(&mut rng, 3))
            .filter(|e| seen.insert(e.clone()))
            .collect();
        let built = Matcher::new(&entries, mode).unwrap();
        let path = temp_path(&format!("roundtrip-{round}.mcm"));
        built.save(&path).unwrap();
        let loaded = Matcher::load(&path, Some(&built.digest())).unwrap();
        assert!(loaded.is_mapped() && !built.is_mapped());
        assert_eq!(loaded.mode(), mode);
        assert_eq!(loaded.n_entries(), built.n_entries());
        assert_eq!(loaded.n_word_entries(), built.n_word_entries());
        assert_eq!(loaded.n_words(), built.n_words());
        let texts: Vec<String> = (0..3000).map(|_| random_phrase(&mut rng, 12)).collect();
        let a = built.match_batch(texts.as_slice(), 0..texts.len(), 2);
        let b = loaded.match_batch(texts.as_slice(), 0..texts.len(), 2);
        assert_eq!(a, b, "round {round} ({mode:?})");
        assert!(
            a.ids.len() > texts.len() / 2,
            "too few matches to test anything"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn stale_files_are_refused() {
    let entries = ["dog", "hot dog", "相机"];
    let m = Matcher::new(&entries, Mode::Mc2).unwrap();
    let path = temp_path("stale.mcm");
    m.save(&path).unwrap();
    let stale = |expect: [u8; 16]| match Matcher::load(&path, Some(&expect)) {
        Err(e @ Error::StaleFile { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("stale file accepted"),
    };
    let other = metadata_digest(&["dog", "hot dog", "相机", "cat"], Mode::Mc2);
    assert!(stale(other).contains("other metadata or mode"));
    assert!(stale(metadata_digest(&entries, Mode::Mc1)).contains("other metadata or mode"));
    assert_eq!(m.digest(), metadata_digest(&entries, Mode::Mc2));
    // No expectation: any whole file of this format loads.
    assert!(Matcher::load(&path, None).is_ok());

    let good = std::fs::read(&path).unwrap();
    let mut newer = good.clone();
    newer[8] = newer[8].wrapping_add(1); // the format version
    std::fs::write(&path, &newer).unwrap();
    assert!(stale(m.digest()).contains("format"));
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(stale(m.digest()).contains("truncated"));
    std::fs::write(&path, b"not a matcher").unwrap();
    assert!(stale(m.digest()).contains("not a matcher file"));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(Matcher::load(&path, None), Err(Error::Io { .. })));
}

#[test]
fn save_replaces_atomically() {
    let path = temp_path("replace.mcm");
    Matcher::new(&["a"], Mode::Mc1)
        .unwrap()
        .save(&path)
        .unwrap();
    let first = Matcher::load(&path, None).unwrap();
    Matcher::new(&["b", "c"], Mode::Mc1)
        .unwrap()
        .save(&path)
        .unwrap();
    // The first mapping still sees its own (unlinked) file.
    assert_eq!(first.match_text("a b c"), vec![0]);
    assert_eq!(
        Matcher::load(&path, None).unwrap().match_text("a b c"),
        vec![0, 1]
    );
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let leftovers = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".{name}.tmp"))
        })
        .count();
    assert_eq!(leftovers, 0);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn texts_with_many_matches_sort_like_few() {
    // Every 1- and 2-letter string over 12 Thai letters is an entry, so a text of 120
    // letters matches far more than the 64 ids the rank sort takes (the bitmap path).
    let letters: Vec<char> = "กขคงจฉชซฌญฎฏ".chars().collect();
    let mut entries: Vec<String> = letters.iter().map(|c| c.to_string()).collect();
    for a in &letters {
        for b in &letters {
            entries.push(format!("{a}{b}"));
        }
    }
    let m = Matcher::new(&entries, Mode::Mc2).unwrap();
    let mut state = 7u64;
    let text: String = (0..120)
        .map(|_| {
            state = crate::sample::splitmix64(state);
            letters[(state % 12) as usize]
        })
        .collect();
    let mut want: Vec<u32> = (0..entries.len() as u32)
        .filter(|&i| text.contains(entries[i as usize].as_str()))
        .collect();
    want.sort_unstable();
    assert!(want.len() > 64, "{}", want.len());
    assert_eq!(ids(&m, &text), want);
    // And again through a batch, whose scratch bitmap is reused across texts.
    let texts = vec![text.as_str(), "ก", text.as_str()];
    let csr = m.match_batch(texts.as_slice(), 0..3, 1);
    assert_eq!(&csr.ids[..want.len()], &want[..]);
    assert_eq!(&csr.ids[csr.offsets[2] as usize..], &want[..]);
}

#[test]
fn word_entries_match_like_a_scan() {
    // Many multi-word entries sharing first words (so the root filter passes pairs that
    // start no entry, and walks go deeper than one edge), against the spec's rule:
    // " " + entry + " " occurs in the spaced text.
    let words = [
        "a",
        "hot",
        "dog",
        "x",
        "St.",
        "abcdefghij",
        "abcdefghijklmnopq",
        ",",
    ];
    let mut rng = Rng(0x51ed_2701_aa3c_9d11);
    let phrase = |rng: &mut Rng, max: u64| {
        let n = 1 + rng.next() % max;
        (0..n)
            .map(|_| rng.pick(&words))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut seen = std::collections::HashSet::new();
    let entries: Vec<String> = (0..400)
        .map(|_| phrase(&mut rng, 4))
        .filter(|e| seen.insert(e.clone()))
        .collect();
    let m = Matcher::new(&entries, Mode::Mc1).unwrap();
    let texts: Vec<String> = (0..2000)
        .map(|_| {
            phrase(&mut rng, 14)
                .replace(" ,", ",")
                .replace("x x", "x  x")
        })
        .collect();
    let csr = m.match_batch(texts.as_slice(), 0..texts.len(), 1);
    let mut spaced = Vec::new();
    let mut deep = 0;
    for (i, text) in texts.iter().enumerate() {
        spaced_into(text, false, &mut spaced);
        let hay = as_str(&spaced);
        let want: Vec<u32> = (0..entries.len() as u32)
            .filter(|&e| hay.contains(&format!(" {} ", entries[e as usize])))
            .collect();
        deep += want
            .iter()
            .filter(|&&e| entries[e as usize].matches(' ').count() >= 2)
            .count();
        let got = &csr.ids[csr.offsets[i] as usize..csr.offsets[i + 1] as usize];
        assert_eq!(got, &want[..], "{text:?}");
    }
    assert!(deep > 100, "too few matches of three or more words: {deep}");
}
