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
