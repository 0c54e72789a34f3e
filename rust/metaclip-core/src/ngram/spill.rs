//! Sorted runs of bigram counts on disk, and their merge.
//!
//! A run is a file of `(key, count)` pairs sorted by key, written as delta + LEB128 varints
//! (typically 3–5 B per bigram) into a private spill directory that is removed on drop.
//! [`Runs::merge`] reads every run at once (a k-way heap merge, plus the sorted run still
//! in memory) and sums the counts of equal keys.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use crate::{Error, Result};

static SPILL_SEQ: AtomicU64 = AtomicU64::new(0);

struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    fn create(parent: Option<&Path>) -> Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "metaclip-ngram-{}-{}-{}",
            std::process::id(),
            nanos,
            SPILL_SEQ.fetch_add(1, AtomicOrdering::Relaxed)
        );
        let path = parent.join(name);
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self { path })
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn write_varint(w: &mut impl Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    w.write_all(&buf[..n])
}

struct RunReader {
    path: PathBuf,
    r: BufReader<File>,
    last_key: u64,
}

impl RunReader {
    fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            r: BufReader::with_capacity(1 << 20, f),
            last_key: 0,
        })
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let mut b = [0u8; 1];
            self.r
                .read_exact(&mut b)
                .map_err(|e| Error::io(&self.path, e))?;
            v |= u64::from(b[0] & 0x7F) << shift;
            if b[0] & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(Error::InvalidArgument(format!(
                    "corrupt spill file {}",
                    self.path.display()
                )));
            }
        }
    }

    fn next(&mut self) -> Result<Option<(u64, u64)>> {
        let empty = self
            .r
            .fill_buf()
            .map_err(|e| Error::io(&self.path, e))?
            .is_empty();
        if empty {
            return Ok(None);
        }
        let delta = self.varint()?;
        let count = self.varint()?;
        self.last_key = self.last_key.wrapping_add(delta);
        Ok(Some((self.last_key, count)))
    }
}

/// The runs spilled so far, in their (lazily created) spill directory.
#[derive(Default)]
pub(super) struct Runs {
    dir: Option<SpillDir>,
    paths: Vec<PathBuf>,
    spilled_bytes: u64,
}

impl Runs {
    /// Number of runs written.
    pub(super) fn len(&self) -> usize {
        self.paths.len()
    }

    /// True before the first spill.
    pub(super) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Bytes written to run files so far.
    pub(super) fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Write `sorted` (ascending, unique keys) as a new run; the spill directory is made
    /// under `parent` (default: the system temp directory) at the first run.
    pub(super) fn write(&mut self, sorted: &[(u64, u64)], parent: Option<&Path>) -> Result<()> {
        if self.dir.is_none() {
            self.dir = Some(SpillDir::create(parent)?);
        }
        let dir = match &self.dir {
            Some(d) => d.path.clone(),
            None => return Err(Error::InvalidArgument("no spill directory".into())),
        };
        let path = dir.join(format!("run-{:05}.bin", self.paths.len()));
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut last = 0u64;
        let mut n = 0u64;
        let res: std::io::Result<()> = (|| {
            for &(k, c) in sorted {
                write_varint(&mut w, k - last)?;
                write_varint(&mut w, c)?;
                last = k;
            }
            w.flush()?;
            n = w.get_ref().metadata()?.len();
            Ok(())
        })();
        res.map_err(|e| Error::io(&path, e))?;
        self.spilled_bytes += n;
        self.paths.push(path);
        Ok(())
    }

    /// Visit every distinct key of the runs and of `mem_run` (sorted, unique keys) with
    /// its total count, in key order.
    pub(super) fn merge(&self, mem_run: &[(u64, u64)], mut f: impl FnMut(u64, u64)) -> Result<()> {
        let mut readers = self
            .paths
            .iter()
            .map(|p| RunReader::open(p))
            .collect::<Result<Vec<_>>>()?;
        let mem_src = readers.len();
        let mut mem_pos = 0usize;
        let mut heap: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some((k, c)) = r.next()? {
                heap.push(Reverse((k, i, c)));
            }
        }
        if let Some(&(k, c)) = mem_run.first() {
            heap.push(Reverse((k, mem_src, c)));
            mem_pos = 1;
        }
        let mut cur: Option<(u64, u64)> = None;
        while let Some(Reverse((k, src, c))) = heap.pop() {
            match &mut cur {
                Some((ck, cc)) if *ck == k => *cc += c,
                _ => {
                    if let Some((ck, cc)) = cur {
                        f(ck, cc);
                    }
                    cur = Some((k, c));
                }
            }
            let next = if src == mem_src {
                let n = mem_run.get(mem_pos).copied();
                mem_pos += 1;
                n
            } else {
                readers[src].next()?
            };
            if let Some((nk, nc)) = next {
                heap.push(Reverse((nk, src, nc)));
            }
        }
        if let Some((ck, cc)) = cur {
            f(ck, cc);
        }
        Ok(())
    }
}

/// Merge two sorted runs, summing the counts of equal keys.
pub(super) fn merge_sorted(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            Ordering::Equal => {
                out.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}
