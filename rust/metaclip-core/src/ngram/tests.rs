use std::io::Write;
use std::path::PathBuf;

use super::*;
use crate::Error;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metaclip-ngram-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn counter(budget: u64) -> NgramCounter {
    NgramCounter::new(CounterConfig {
        mem_budget_bytes: budget,
        ..CounterConfig::default()
    })
}

#[test]
fn toy_corpus_counts_and_pmi_match_hand_computation() {
    // tokens: a b c . a b d  -> "." breaks the chain
    let mut c = counter(1 << 20);
    c.add_line("a b c. a b d").expect("add");
    assert_eq!(c.stats().total_tokens, 6);
    assert_eq!(c.unigram_count("a"), 2);
    assert_eq!(c.bigram_count("a", "b").expect("count"), 2);
    assert_eq!(c.bigram_count("c", "a").expect("count"), 0);
    // PMI(a,b) = log2(2*6 / (2*2)) = log2 3
    let sel = c
        .bigrams_by_pmi(PmiSelect {
            threshold: f64::NEG_INFINITY,
            inclusive: true,
            min_count: 1,
            top_k: None,
        })
        .expect("pmi");
    assert_eq!(sel.distinct_bigrams, 3);
    let ab = sel
        .bigrams
        .iter()
        .find(|b| b.first == "a" && b.second == "b")
        .expect("ab");
    assert!((ab.pmi - 3f64.log2()).abs() < 1e-12);
    // b c: log2(1*6/(2*1)) = log2 3 as well; b d the same -> ties broken by code points
    let order: Vec<(String, String)> = sel
        .bigrams
        .iter()
        .map(|b| (b.first.clone(), b.second.clone()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("a".into(), "b".into()),
            ("b".into(), "c".into()),
            ("b".into(), "d".into())
        ]
    );
}

#[test]
fn pmi_threshold_is_exact_at_the_boundary() {
    let n = 1u64 << 30;
    assert_eq!(pmi(1, 1, 1, n), 30.0);
    assert!(pmi_passes(1, 1, 1, n, 30.0, true));
    assert!(!pmi_passes(1, 1, 1, n, 30.0, false));
    assert!(!pmi_passes(1, 1, 1, n - 1, 30.0, true));
    // 29.99 vs 30: c(a)c(b)/c(ab) = 2^0.01 is not an integer ratio; use a float threshold
    assert!(pmi_passes(1, 1, 1, n - 1, 29.99, true));
    // huge counts do not overflow
    assert!(!pmi_passes(
        u64::MAX,
        u64::MAX,
        u64::MAX,
        u64::MAX,
        64.0,
        true
    ));
    assert!(pmi_passes(u64::MAX, 1, 1, u64::MAX, -64.0, false));
}

#[test]
fn spilling_gives_the_same_counts() {
    let mut text = String::new();
    for i in 0..5000u32 {
        text.push_str(&format!(
            "w{} w{} w{}\n",
            i % 97,
            (i * 7) % 89,
            (i * 13) % 83
        ));
    }
    let mut small = counter(1); // capacity 1,024 entries -> several runs
    let mut big = counter(1 << 26);
    small.add_text(&text).expect("add");
    // query in the middle, then add more: the in-memory run and the runs must merge
    let _ = small.bigram_count("w1", "w7").expect("count");
    small.add_text(&text).expect("add");
    big.add_text(&text).expect("add");
    big.add_text(&text).expect("add");
    assert!(small.stats().runs > 1, "{:?}", small.stats());
    assert_eq!(big.stats().runs, 0);
    let mut a = Vec::new();
    let mut b = Vec::new();
    small
        .for_each_bigram(|x, y, c| a.push((x, y, c)))
        .expect("iter");
    big.for_each_bigram(|x, y, c| b.push((x, y, c)))
        .expect("iter");
    // ids are assigned in first-seen order, identical for both counters
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    let sel = PmiSelect {
        threshold: 0.0,
        inclusive: true,
        min_count: 2,
        top_k: Some(50),
    };
    let sa = small.bigrams_by_pmi(sel).expect("pmi");
    let sb = big.bigrams_by_pmi(sel).expect("pmi");
    assert_eq!(sa.bigrams, sb.bigrams);
    assert_eq!(sa.bigrams.len(), 50);
}

#[test]
fn top_unigrams_are_sorted_and_tied_by_code_points() {
    let mut c = counter(1 << 20);
    c.add_line("b a c b a d d").expect("add");
    assert_eq!(
        c.top_unigrams(2, None),
        vec![
            ("a".to_owned(), 2),
            ("b".to_owned(), 2),
            ("d".to_owned(), 2)
        ]
    );
    assert_eq!(c.top_unigrams(1, Some(1)), vec![("a".to_owned(), 2)]);
}

#[test]
fn count_files_load_and_report_bad_lines() {
    let d = tmpdir("counts");
    let p = d.join("uni.txt");
    let mut f = std::fs::File::create(&p).expect("create");
    writeln!(f, "dog 100\ncat\t99\n\n# comment\nbad line here").expect("write");
    drop(f);
    let mut c = counter(1 << 20);
    let err = countfile::load_unigram_counts(&mut c, &p).expect_err("bad line");
    match &err {
        Error::Parse { line, path, .. } => {
            assert_eq!(*line, 5);
            assert!(path.ends_with("uni.txt"));
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("uni.txt:5:"));
    assert_eq!(c.unigram_count("dog"), 100);
    let p2 = d.join("bi.txt");
    std::fs::write(&p2, "new york 12\nnew x\n").expect("write");
    let err = countfile::load_bigram_counts(&mut c, &p2).expect_err("bad count");
    assert!(err.to_string().contains("bi.txt:2:"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn titles_and_pageviews() {
    let d = tmpdir("titles");
    let p = d.join("pv.txt");
    std::fs::write(
        &p,
        "en Hot_dog 60 0\nen.m Hot_dog 10 0\nen Talk:Dog 500 0\nde Hund 3 0\nen.d word 900 0\n\
         en Cat 49 0\nbroken line\n",
    )
    .expect("write");
    let mut t = TitleCounts::default();
    let st = t
        .load_pageviews(
            &p,
            &PageviewOptions {
                min_line_views: 50,
                include_mobile: false,
                langs: vec![],
            },
        )
        .expect("read");
    assert_eq!(t.top("en", 0, None), vec![("Hot dog".to_owned(), 60)]);
    assert_eq!(st.dropped, 1);
    let mut t2 = TitleCounts::default();
    t2.load_pageviews(
        &p,
        &PageviewOptions {
            min_line_views: 1,
            include_mobile: true,
            langs: vec![],
        },
    )
    .expect("read");
    assert_eq!(
        t2.top("en", 0, None),
        vec![("Hot dog".to_owned(), 70), ("Cat".to_owned(), 49)]
    );
    assert_eq!(t2.langs(), vec!["de".to_owned(), "en".to_owned()]);
    let p2 = d.join("tc.txt");
    std::fs::write(&p2, "New York City\t12\nFoo_bar 3\nx y\n").expect("write");
    let mut t3 = TitleCounts::default();
    let err = t3.load_title_counts("en", &p2).expect_err("bad");
    assert!(err.to_string().contains("tc.txt:3:"), "{err}");
    assert_eq!(t3.top("en", 0, None)[0], ("New York City".to_owned(), 12));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn gzip_files_are_read() {
    use flate2::write::GzEncoder;
    let d = tmpdir("gz");
    let p = d.join("c.txt.gz");
    let mut e = GzEncoder::new(
        std::fs::File::create(&p).expect("create"),
        flate2::Compression::fast(),
    );
    e.write_all(b"red fox\nred fox\n").expect("write");
    e.finish().expect("finish");
    let mut c = counter(1 << 20);
    c.add_file(&p, |_| true).expect("read");
    assert_eq!(c.bigram_count("red", "fox").expect("count"), 2);
    let _ = std::fs::remove_dir_all(&d);
}
