//! Bench only (never shipped): the Rust peers of our matcher on the texts and entries the
//! Python benches write, and the floor under our matcher (tokenise + hash, + one probe).
//!
//! `metaclip-peers ENTRIES.json TEXTS.json [mc1|mc2] [REPEAT]` prints one JSON object:
//! a row per engine with texts/s on one thread (best of REPEAT), texts per CPU-second,
//! MB/s, bytes per entry, build seconds, and how many texts' match sets differ from ours.

use std::time::Instant;

use aho_corasick::{AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use daachorse::{
    CharwiseDoubleArrayAhoCorasickBuilder, DoubleArrayAhoCorasickBuilder,
    MatchKind as DaachorseKind,
};
use metaclip_core::matcher::{is_cjk_like, Matcher, Mode};
use metaclip_core::spacing::spaced_into;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error>;

fn cpu_seconds() -> f64 {
    // This thread's CPU time (the bench is single-threaded): exact, unlike /proc's ticks.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best wall and CPU seconds of `repeat` runs of `f`, and its last result.
fn timed<R>(repeat: usize, mut f: impl FnMut() -> R) -> (R, f64, f64) {
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    let mut out = None;
    for _ in 0..repeat.max(1) {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        out = Some(f());
        wall = wall.min(t0.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds() - c0);
    }
    (out.expect("ran at least once"), wall, cpu)
}

/// The spec §2 pattern of an entry: pads unless MC2 and the edge character is CJK-like.
fn pattern(entry: &str, mode: Mode) -> String {
    let pads = |c: Option<char>| mode == Mode::Mc1 || !c.is_some_and(is_cjk_like);
    let mut p = String::with_capacity(entry.len() + 2);
    if pads(entry.chars().next()) {
        p.push(' ');
    }
    p.push_str(entry);
    if pads(entry.chars().next_back()) {
        p.push(' ');
    }
    p
}

/// Match every text with `find` (over the spaced text), as sorted unique id lists.
fn run_peer(texts: &[String], mut find: impl FnMut(&str, &mut Vec<u32>)) -> Vec<Vec<u32>> {
    let mut spaced = Vec::new();
    texts
        .iter()
        .map(|t| {
            spaced_into(t, false, &mut spaced);
            let mut ids = Vec::new();
            // Spacing only inserts and replaces ASCII: still UTF-8.
            if let Ok(s) = std::str::from_utf8(&spaced) {
                find(s, &mut ids);
            }
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect()
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: metaclip-peers ENTRIES.json TEXTS.json [mc1|mc2] [REPEAT]".into());
    }
    let entries: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&args[2])?)?;
    let mode = Mode::parse(args.get(3).map_or("mc1", |s| s.as_str()))?;
    let repeat: usize = args.get(4).map_or(Ok(3), |r| r.parse())?;
    let n = texts.len() as f64;
    let mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let n_entries = entries.len() as f64;
    let mut rows: Vec<Value> = Vec::new();
    let row = |name: &str, wall: f64, cpu: f64, build: f64, heap: usize, differ: Option<usize>| {
        json!({
            "engine": name,
            "texts_per_s": n / wall,
            "texts_per_cpu_s": n / cpu.max(1e-9),
            "mb_per_s": mb / wall,
            "build_s": build,
            "bytes_per_entry": heap as f64 / n_entries,
            "differing_texts": differ,
        })
    };

    let t = Instant::now();
    let m = Matcher::new(&entries, mode)?;
    let build = t.elapsed().as_secs_f64();
    // The fast rows get more runs: they take a fraction of a second each.
    let fast = repeat.max(5);
    let (ours, wall, cpu) = timed(fast, || m.match_batch(texts.as_slice(), 0..texts.len(), 1));
    rows.push(row("metaclip", wall, cpu, build, m.memory_bytes(), Some(0)));
    let ours: Vec<&[u32]> = (0..texts.len())
        .map(|i| &ours.ids[ours.offsets[i] as usize..ours.offsets[i + 1] as usize])
        .collect();
    let differ = |got: &[Vec<u32>]| {
        got.iter()
            .zip(&ours)
            .filter(|(g, o)| g.as_slice() != **o)
            .count()
    };

    // The floor: our tokeniser and hash alone, then + one probe of a u64 set.
    let (sum, wall, cpu) = timed(fast, || m.floor_hash(texts.as_slice()));
    std::hint::black_box(sum);
    rows.push(row("floor: tokenise + hash", wall, cpu, 0.0, 0, None));
    let set = m.floor_set();
    let (found, wall, cpu) = timed(fast, || m.floor_probe(texts.as_slice(), &set));
    std::hint::black_box(found);
    rows.push(row(
        "floor: tokenise + hash + 1 probe",
        wall,
        cpu,
        0.0,
        0,
        None,
    ));

    let patterns: Vec<String> = entries.iter().map(|e| pattern(e, mode)).collect();

    // aho-corasick: Standard is the only kind with overlapping search (every entry).
    let t = Instant::now();
    let ac = AhoCorasickBuilder::new()
        .match_kind(MatchKind::Standard)
        .build(&patterns)?;
    let build = t.elapsed().as_secs_f64();
    let kind = match ac.kind() {
        AhoCorasickKind::NoncontiguousNFA => "noncontiguous NFA",
        AhoCorasickKind::ContiguousNFA => "contiguous NFA",
        AhoCorasickKind::DFA => "DFA",
        _ => "other",
    };
    let (got, wall, cpu) = timed(repeat, || {
        run_peer(&texts, |s, ids| {
            ids.extend(ac.find_overlapping_iter(s).map(|x| x.pattern().as_u32()))
        })
    });
    let name = format!("aho-corasick 1.1 (Standard, overlapping; {kind})");
    rows.push(row(
        &name,
        wall,
        cpu,
        build,
        ac.memory_usage(),
        Some(differ(&got)),
    ));
    drop(ac);

    // The two daachorse automata share their API but no trait: one macro measures both.
    macro_rules! daachorse_row {
        ($builder:ty, $name:expr) => {{
            let t = Instant::now();
            let da = <$builder>::new()
                .match_kind(DaachorseKind::Standard)
                .build_with_values(patterns.iter().zip(0u32..))
                .map_err(|e| e.to_string())?;
            let build = t.elapsed().as_secs_f64();
            let (got, wall, cpu) = timed(repeat, || {
                run_peer(&texts, |s, ids| {
                    ids.extend(da.find_overlapping_iter(s).map(|x| x.value()))
                })
            });
            rows.push(row(
                $name,
                wall,
                cpu,
                build,
                da.heap_bytes(),
                Some(differ(&got)),
            ));
        }};
    }
    daachorse_row!(
        DoubleArrayAhoCorasickBuilder,
        "daachorse 5 bytewise (overlapping)"
    );
    daachorse_row!(
        CharwiseDoubleArrayAhoCorasickBuilder,
        "daachorse 5 charwise (overlapping)"
    );

    let out = json!({
        "entries": entries.len(),
        "texts": texts.len(),
        "mode": mode.name(),
        "repeat": repeat,
        "rows": rows,
    });
    println!("{out}");
    Ok(())
}
