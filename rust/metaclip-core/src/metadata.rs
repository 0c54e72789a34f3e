//! Loading a given metadata list (spec §1): ids are list positions, duplicates are errors.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::path::Path;

use crate::error::{Error, Result};

/// Error if any entry occurs twice, naming the first few (each with the id of its first
/// occurrence).
///
/// Entries are hashed and the (hash, id) pairs sorted; strings are compared only where
/// hashes are equal. At 500k entries this takes half the time of a hash set, whose
/// probes miss the cache.
pub fn check_unique<S: AsRef<str>>(entries: &[S]) -> Result<()> {
    let hasher = foldhash::fast::FixedState::with_seed(0x6d65_7461);
    let mut keyed: Vec<(u64, usize)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (hasher.hash_one(e.as_ref()), i))
        .collect();
    keyed.sort_unstable();
    let mut dups: Vec<(usize, usize)> = Vec::new(); // (id, id of the first occurrence)
    for run in keyed.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
        // Ids ascend within a run, so the first equal string is the first occurrence.
        for (j, &(_, id)) in run.iter().enumerate().skip(1) {
            let text = entries[id].as_ref();
            if let Some(&(_, first)) = run[..j].iter().find(|p| entries[p.1].as_ref() == text) {
                dups.push((id, first));
            }
        }
    }
    if dups.is_empty() {
        return Ok(());
    }
    dups.sort_unstable();
    let examples: Vec<String> = dups
        .iter()
        .take(5)
        .map(|&(id, first)| format!("{:?} (ids {first} and {id})", entries[id].as_ref()))
        .collect();
    Err(Error::Duplicates {
        count: dups.len(),
        examples: examples.join(", "),
    })
}

/// The bytes of a metadata file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// The UTF-8 byte-order mark some editors put at the start of a text file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a leading UTF-8 byte-order mark. A BOM is file encoding, not text: left
/// in, it would be glued to the first entry, which then never matches.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// The entries of a JSON list of strings (the released MC1 `metadata.json`), borrowed from
/// `bytes` where they have no escapes; a leading UTF-8 BOM is skipped; duplicates are an
/// error. `path` names the file in errors.
pub fn parse_json_list<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<Cow<'a, str>>> {
    let entries: Vec<Cow<'a, str>> = serde_json::from_slice::<Vec<JsonStr<'a>>>(strip_bom(bytes))
        .map_err(|e| Error::Parse {
            path: path.display().to_string(),
            line: e.line() as u64,
            msg: format!("expected a JSON list of strings: {e}"),
        })?
        .into_iter()
        .map(|s| s.0)
        .collect();
    check_unique(&entries)?;
    Ok(entries)
}

/// A JSON string, borrowed unless it has escapes (serde borrows a bare `Cow` never).
#[derive(serde::Deserialize)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON list of strings (the released MC1 `metadata.json`).
pub fn load_json_list(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    let entries = parse_json_list(&bytes, path)?;
    Ok(entries.into_iter().map(Cow::into_owned).collect())
}

/// The entries of UTF-8 text, one per line (`\n` or `\r\n`), borrowed from `bytes`; a leading
/// UTF-8 BOM is skipped; a blank line or a duplicate is an error. `path` names the file in
/// errors. Entries are kept as written, spaces at their ends included (spec §1).
pub fn parse_lines<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<&'a str>> {
    let mut entries = Vec::new();
    let bytes = strip_bom(bytes);
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Ok(entries);
    }
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let at = |msg: String| Error::Parse {
            path: path.display().to_string(),
            line: i as u64 + 1,
            msg,
        };
        let text = std::str::from_utf8(line).map_err(|e| at(format!("invalid UTF-8 ({e})")))?;
        if text.is_empty() {
            return Err(at("empty entry".into()));
        }
        entries.push(text);
    }
    check_unique(&entries)?;
    Ok(entries)
}

/// UTF-8 text, one entry per line (`\n` or `\r\n`); a blank line is an error.
#[cfg(test)]
fn load_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    Ok(parse_lines(&bytes, path)?
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// xxh3-128 of strings packed as bytes plus offsets, each prefixed by its byte length (a
/// content digest of a metadata list), hashed as a stream (no second copy of the data).
pub fn digest_packed(data: &[u8], offsets: &[i64]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for w in offsets.windows(2) {
        h.update(&((w[1] - w[0]) as u64).to_le_bytes());
        h.update(&data[w[0] as usize..w[1] as usize]);
    }
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_tells_splits_and_contents_apart() {
        let d = |parts: &[&str]| {
            let mut data = Vec::new();
            let mut offsets = vec![0i64];
            for p in parts {
                data.extend_from_slice(p.as_bytes());
                offsets.push(data.len() as i64);
            }
            digest_packed(&data, &offsets)
        };
        assert_eq!(d(&["ab", "c"]), d(&["ab", "c"]));
        assert_ne!(d(&["ab", "c"]), d(&["a", "bc"]));
        assert_ne!(d(&["ab", "c"]), d(&["ab", "d"]));
        assert_ne!(d(&["ab", "c"]), d(&["c", "ab"]));
        assert_ne!(d(&[""]), d(&[]));
    }

    #[test]
    fn lines_and_json() {
        let dir = std::env::temp_dir().join(format!("mc-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.txt");
        std::fs::write(&p, "dog\r\nhot dog\n").unwrap();
        assert_eq!(load_lines(&p).unwrap(), vec!["dog", "hot dog"]);
        std::fs::write(&p, b"dog\n\xff\n").unwrap();
        assert!(load_lines(&p).unwrap_err().to_string().contains(":2:"));
        let j = dir.join("m.json");
        std::fs::write(&j, r#"["a", "b", "a"]"#).unwrap();
        assert!(matches!(
            load_json_list(&j),
            Err(Error::Duplicates { count: 1, .. })
        ));
        std::fs::write(&j, r#"["b", "a", "b", "c", "a\u00e9", "b", "a\u00e9"]"#).unwrap();
        let err = load_json_list(&j).unwrap_err().to_string();
        assert!(err.contains("3 "), "{err}");
        assert!(
            err.contains(r#""b" (ids 0 and 2), "b" (ids 0 and 5), "aé" (ids 4 and 6)"#),
            "{err}"
        );
        std::fs::write(&j, r#"["a\"b", "c\u00e9", "d"]"#).unwrap();
        assert_eq!(load_json_list(&j).unwrap(), vec!["a\"b", "cé", "d"]);
        std::fs::write(&j, r#"["a", 3]"#).unwrap();
        assert!(matches!(load_json_list(&j), Err(Error::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bom_is_skipped_and_edge_spaces_are_kept() {
        let p = Path::new("m.txt");
        // A BOM before the first line (with CRLF, with or without a final newline).
        let lines = parse_lines(b"\xEF\xBB\xBFdog\r\ncat\r\n", p).unwrap();
        assert_eq!(lines, vec!["dog", "cat"]);
        assert_eq!(parse_lines(b"\xEF\xBB\xBFdog", p).unwrap(), vec!["dog"]);
        assert!(parse_lines(b"\xEF\xBB\xBF", p).unwrap().is_empty());
        // Only the file's leading BOM: one later in the text stays (U+FEFF is a character).
        let lines = parse_lines("dog\n\u{feff}cat\n".as_bytes(), p).unwrap();
        assert_eq!(lines, vec!["dog", "\u{feff}cat"]);
        // A BOM on its own first line is an empty entry, as a blank line is.
        let err = parse_lines(b"\xEF\xBB\xBF\ndog\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1: empty entry"), "{err}");
        // JSON lists: serde_json rejects a BOM; we skip it.
        let j = Path::new("m.json");
        let got = parse_json_list(b"\xEF\xBB\xBF[\"dog\", \"cat\"]", j).unwrap();
        assert_eq!(got, vec!["dog", "cat"]);
        // Entries are never trimmed (spec §1): spaces and tabs at the ends stay.
        let lines = parse_lines(b" dog\ncat \n\thot dog\t\n", p).unwrap();
        assert_eq!(lines, vec![" dog", "cat ", "\thot dog\t"]);
        let got = parse_json_list(br#"[" dog", "cat "]"#, j).unwrap();
        assert_eq!(got, vec![" dog", "cat "]);
    }
}
