//! Loading a given metadata list (spec §1): ids are list positions, duplicates are errors.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Error if any entry occurs twice, naming the first few with both ids.
pub fn check_unique<S: AsRef<str>>(entries: &[S]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    let mut dups = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(first) = seen.insert(e.as_ref(), i) {
            dups.push(format!("{:?} (ids {first} and {i})", e.as_ref()));
        }
    }
    if dups.is_empty() {
        Ok(())
    } else {
        Err(Error::Duplicates {
            count: dups.len(),
            examples: dups.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// A JSON list of strings (the released MC1 `metadata.json`).
pub fn load_json_list(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    let shown = path.display().to_string();
    let entries: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| Error::Parse {
        path: shown.clone(),
        line: e.line() as u64,
        msg: format!("expected a JSON list of strings: {e}"),
    })?;
    check_unique(&entries)?;
    Ok(entries)
}

/// UTF-8 text, one entry per line (`\n` or `\r\n`); a blank line is an error.
pub fn load_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = read(path)?;
    let shown = path.display().to_string();
    let mut entries = Vec::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return Ok(entries);
    }
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|e| Error::Parse {
            path: shown.clone(),
            line: i as u64 + 1,
            msg: format!("invalid UTF-8 ({e})"),
        })?;
        if text.is_empty() {
            return Err(Error::Parse {
                path: shown.clone(),
                line: i as u64 + 1,
                msg: "empty entry".into(),
            });
        }
        entries.push(text.to_owned());
    }
    check_unique(&entries)?;
    Ok(entries)
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
        std::fs::write(&j, r#"["a", 3]"#).unwrap();
        assert!(matches!(load_json_list(&j), Err(Error::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
