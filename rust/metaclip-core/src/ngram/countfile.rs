//! Line readers and count-file parsers: `word count`, `first second count`, `title count`,
//! and Wikipedia pageview dump lines (`project title views bytes`). Plain or `.gz` files.
//! A malformed line is an error naming the file and the 1-based line number.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use foldhash::fast::FixedState;
use hashbrown::HashMap;

use super::counter::NgramCounter;
use crate::{Error, Result};

fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let r: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f)))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, r)))
}

/// Call `f(line_number, bytes)` for each line (1-based; `\n` and a trailing `\r` removed).
pub fn for_each_line(path: &Path, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    let mut r = open(path)?;
    let mut buf = Vec::with_capacity(1 << 12);
    let mut n = 0u64;
    loop {
        buf.clear();
        let got = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        f(n, &buf)?;
    }
}

fn parse_err(path: &Path, line: u64, msg: impl Into<String>) -> Error {
    Error::Parse {
        path: path.display().to_string(),
        line,
        msg: msg.into(),
    }
}

fn utf8<'a>(path: &Path, line: u64, raw: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(raw).map_err(|e| parse_err(path, line, format!("invalid UTF-8: {e}")))
}

fn count(path: &Path, line: u64, s: &str) -> Result<u64> {
    s.parse::<u64>().map_err(|_| {
        parse_err(
            path,
            line,
            format!("count must be a non-negative integer, got {s:?}"),
        )
    })
}

/// Call `f(line number, fields)` on each line of `path` that holds exactly `N`
/// whitespace-separated fields; blank lines and lines starting with `#` are skipped, other
/// lines are an error naming the file, the line and the expected `layout`. Returns the
/// lines passed to `f`.
fn for_each_record<const N: usize>(
    path: &Path,
    layout: &str,
    mut f: impl FnMut(u64, [&str; N]) -> Result<()>,
) -> Result<u64> {
    let mut loaded = 0;
    for_each_line(path, |n, raw| {
        let t = utf8(path, n, raw)?.trim();
        if t.is_empty() || t.starts_with('#') {
            return Ok(());
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        let Ok(record) = <[&str; N]>::try_from(fields.as_slice()) else {
            return Err(parse_err(
                path,
                n,
                format!("expected `{layout}`, got {} fields", fields.len()),
            ));
        };
        f(n, record)?;
        loaded += 1;
        Ok(())
    })?;
    Ok(loaded)
}

/// Load `word count` lines into the counter's unigram counts. Returns lines loaded.
pub fn load_unigram_counts(counter: &mut NgramCounter, path: &Path) -> Result<u64> {
    for_each_record(path, "word count", |n, [w, c]| {
        counter.add_unigram_count(w, count(path, n, c)?)
    })
}

/// Load `first second count` lines into the bigram counts. Returns lines loaded.
pub fn load_bigram_counts(counter: &mut NgramCounter, path: &Path) -> Result<u64> {
    for_each_record(path, "first second count", |n, [a, b, c]| {
        counter.add_bigram_count(a, b, count(path, n, c)?)
    })
}

/// Options for reading pageview dumps.
#[derive(Clone, Debug)]
pub struct PageviewOptions {
    /// A line counts only if its views ≥ this (MC1: 50, from `int(count / 50) > 0`; MC2: 1).
    pub min_line_views: u64,
    /// Also count mobile-site projects (`xx.m`) into `xx` (MC2: yes; MC1: desktop only).
    pub include_mobile: bool,
    /// Only keep these languages (all if empty).
    pub langs: Vec<String>,
}

/// What was read from title files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TitleReadStats {
    /// Lines read.
    pub lines: u64,
    /// Lines kept.
    pub kept: u64,
    /// Titles dropped because they contain `:` (namespaces) or are empty.
    pub dropped: u64,
    /// Pageview lines skipped: not 4 fields, other projects, or below `min_line_views`.
    pub skipped: u64,
}

/// Title view counts per language: `_` → space, surrounding whitespace stripped, titles
/// with `:` dropped, views summed over files.
#[derive(Default)]
pub struct TitleCounts {
    per_lang: HashMap<String, HashMap<String, u64, FixedState>, FixedState>,
}

fn clean_title(raw: &str) -> Option<String> {
    let t = raw.trim().replace('_', " ");
    let t = t.trim();
    if t.is_empty() || t.contains(':') {
        None
    } else {
        Some(t.to_owned())
    }
}

impl TitleCounts {
    /// Add views to a title of a language (the title is cleaned; returns false if dropped).
    pub fn add(&mut self, lang: &str, title: &str, views: u64) -> bool {
        let Some(t) = clean_title(title) else {
            return false;
        };
        if views == 0 {
            return true;
        }
        *self
            .per_lang
            .entry_ref(lang)
            .or_default()
            .entry(t)
            .or_insert(0) += views;
        true
    }

    /// Read `title count` lines for `lang`: the count is the last field (tab- or
    /// space-separated), the title is everything before it.
    pub fn load_title_counts(&mut self, lang: &str, path: &Path) -> Result<TitleReadStats> {
        let mut st = TitleReadStats::default();
        for_each_line(path, |n, raw| {
            let line = utf8(path, n, raw)?;
            st.lines += 1;
            let t = line.trim_end();
            if t.trim().is_empty() || t.starts_with('#') {
                st.skipped += 1;
                return Ok(());
            }
            let cut = t
                .rfind('\t')
                .or_else(|| t.rfind(char::is_whitespace))
                .ok_or_else(|| parse_err(path, n, "expected `title count`, got one field"))?;
            let views = count(path, n, t[cut..].trim())?;
            if self.add(lang, &t[..cut], views) {
                st.kept += 1;
            } else {
                st.dropped += 1;
            }
            Ok(())
        })?;
        Ok(st)
    }

    /// Read a Wikipedia pageview dump (`project title views bytes`; plain or `.gz`).
    /// Only Wikipedia projects are used: `xx` (desktop) and, if enabled, `xx.m` (mobile);
    /// the language is `xx` with `-` → `_`.
    pub fn load_pageviews(&mut self, path: &Path, opt: &PageviewOptions) -> Result<TitleReadStats> {
        let mut st = TitleReadStats::default();
        for_each_line(path, |n, raw| {
            st.lines += 1;
            let line = String::from_utf8_lossy(raw);
            let fields: Vec<&str> = line.trim().split(' ').collect();
            let [project, title, views, _bytes] = fields[..] else {
                st.skipped += 1;
                return Ok(());
            };
            let lang = match project.strip_suffix(".m") {
                Some(l) if opt.include_mobile => l,
                Some(_) => {
                    st.skipped += 1;
                    return Ok(());
                }
                None => project,
            };
            if lang.is_empty() || lang.contains('.') || lang == "\"\"" {
                st.skipped += 1;
                return Ok(());
            }
            let lang = lang.replace('-', "_");
            if !opt.langs.is_empty() && !opt.langs.contains(&lang) {
                st.skipped += 1;
                return Ok(());
            }
            let v = count(path, n, views)?;
            if v < opt.min_line_views.max(1) {
                st.skipped += 1;
                return Ok(());
            }
            if self.add(&lang, title, v) {
                st.kept += 1;
            } else {
                st.dropped += 1;
            }
            Ok(())
        })?;
        Ok(st)
    }

    /// Languages with at least one title, sorted.
    pub fn langs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.per_lang.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Number of distinct titles of a language.
    pub fn len(&self, lang: &str) -> usize {
        self.per_lang.get(lang).map_or(0, HashMap::len)
    }

    /// True when no language has a title.
    pub fn is_empty(&self) -> bool {
        self.per_lang.is_empty()
    }

    /// Titles with views ≥ `min_views`, by views descending then code points; first `top_k`.
    pub fn top(&self, lang: &str, min_views: u64, top_k: Option<usize>) -> Vec<(String, u64)> {
        let Some(m) = self.per_lang.get(lang) else {
            return Vec::new();
        };
        let mut v: Vec<(&String, u64)> = m
            .iter()
            .filter(|(_, &c)| c >= min_views)
            .map(|(t, &c)| (t, c))
            .collect();
        let cmp = |a: &(&String, u64), b: &(&String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        if let Some(k) = top_k {
            if k < v.len() {
                if k == 0 {
                    v.clear();
                } else {
                    v.select_nth_unstable_by(k - 1, cmp);
                    v.truncate(k);
                }
            }
        }
        v.sort_unstable_by(cmp);
        v.into_iter().map(|(t, c)| (t.clone(), c)).collect()
    }
}
