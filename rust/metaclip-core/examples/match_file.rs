//! Profile the matcher without Python: `cargo run --release --example match_file --
//! metadata.json texts.txt [threads] [mc1|mc2|fixed] [packed]` prints texts/s (wall and
//! CPU time); `packed` hands the texts over as an Arrow column does.

use std::time::Instant;

use metaclip_core::matcher::{Matcher, Mode};
use metaclip_core::metadata::load_json_list;
use metaclip_core::texts::Packed;

fn cpu_seconds() -> f64 {
    // The process's CPU time, exact (not /proc's 100 Hz ticks).
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: match_file METADATA.json TEXTS.txt [THREADS] [MODE]".into());
    }
    let entries = load_json_list(args[1].as_ref())?;
    let text = std::fs::read_to_string(&args[2])?;
    let texts: Vec<&str> = text.lines().collect();
    let threads: usize = args.get(3).map_or(Ok(1), |t| t.parse())?;
    let mode = Mode::parse(args.get(4).map_or("mc1", |s| s.as_str()))?;
    // "packed": the texts as an Arrow string column, as Python hands them over.
    let packed = (args.get(5).map(|s| s.as_str()) == Some("packed")).then(|| {
        let data: Vec<u8> = texts.concat().into_bytes();
        let mut offsets = vec![0i64];
        for t in &texts {
            offsets.push(offsets[offsets.len() - 1] + t.len() as i64);
        }
        (data, offsets)
    });
    let t = Instant::now();
    let m = Matcher::new(&entries, mode)?;
    println!(
        "build {:.3}s, {} entries, {} words, {:.1} B/entry",
        t.elapsed().as_secs_f64(),
        m.n_entries(),
        m.n_words(),
        m.memory_bytes() as f64 / m.n_entries() as f64
    );
    for _ in 0..5 {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let csr = match &packed {
            Some((data, offsets)) => {
                let p = Packed::new(data, offsets)?;
                m.match_batch(&p, 0..texts.len(), threads)
            }
            None => m.match_batch(texts.as_slice(), 0..texts.len(), threads),
        };
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        println!(
            "{} texts, {} matches: {:.0} texts/s wall, {:.0} texts/s per CPU-second",
            texts.len(),
            csr.ids.len(),
            texts.len() as f64 / wall,
            texts.len() as f64 / cpu.max(1e-9)
        );
    }
    Ok(())
}
