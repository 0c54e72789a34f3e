//! The JSON members of a WebDataset-style tar (`{key}.json` beside `{key}.jpg` …) as one
//! JSON-lines buffer, so that a JSON reader parses them all at once instead of one member
//! at a time.
//!
//! It gives exactly the rows the row-by-row reader (Python) builds, or nothing: each member
//! becomes one line (its newlines turned into spaces, as that reader does), and a member
//! without the key field gets `"key": "<its name's stem>"` as its last field. A member that
//! is not one JSON object gives `None`: the caller then reads the tar row by row, where
//! such a member is a counted skip.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// Extensions (lower case) of the image members whose names the rows get.
const IMAGES: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The JSON members of one tar, as JSON lines, and the names of its images.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TarJson {
    /// One line per JSON member, in archive order.
    pub lines: Vec<u8>,
    /// Number of lines (JSON members).
    pub rows: usize,
    /// Top-level fields of the first member (the added key field included).
    pub first_fields: usize,
    /// (stem, member name) of each image member, in archive order.
    pub images: Vec<(String, String)>,
}

/// The JSON members of the tar at `path` (see the module docs); `None` when one of them is
/// not a JSON object, when a member name is not UTF-8, or when the tar cannot be read (the
/// row-by-row reader then reports it).
pub fn tar_json(path: &Path, key_field: &str) -> Option<TarJson> {
    let file = File::open(path).ok()?;
    let mut archive = tar::Archive::new(SeekBuf {
        inner: BufReader::with_capacity(1 << 13, file),
        pos: 0,
    });
    let mut out = TarJson::default();
    let mut member = Vec::new();
    for entry in archive.entries_with_seek().ok()? {
        let mut entry = entry.ok()?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_sparse() {
            return None; // a regular file to Python's tarfile; rare enough to leave to it
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            continue;
        }
        let name = entry.path().ok()?.to_str()?.to_owned();
        let (stem, ext) = name.rsplit_once('.').unwrap_or(("", name.as_str()));
        if ext == "json" {
            member.clear();
            entry.read_to_end(&mut member).ok()?;
            add_member(&mut out, &mut member, base_name(stem), key_field)?;
        } else if IMAGES.contains(&ext.to_ascii_lowercase().as_str()) {
            out.images.push((base_name(stem).to_owned(), name.clone()));
        }
    }
    Some(out)
}

/// Buffered reads whose relative seeks stay inside the buffer where they can
/// (`BufReader`'s own `seek` always drops it): the tar reader seeks past the padding after
/// every member and past every member it does not read. The buffer is small (8 KiB), so
/// skipping an image costs one seek and one small read (64 KiB: 3x slower on a tar of
/// 100 kB images, no faster on text-only tars).
struct SeekBuf<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read> Read for SeekBuf<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for SeekBuf<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        if let SeekFrom::Current(n) = to {
            let pos = self.pos.checked_add_signed(n);
            let pos = pos.ok_or_else(|| io::Error::other("seek before the start"))?;
            self.inner.seek_relative(n)?;
            self.pos = pos;
        } else {
            self.pos = self.inner.seek(to)?;
        }
        Ok(self.pos)
    }
}

/// `pathlib.Path(stem).name`: the last component, `.` components and empty ones dropped.
fn base_name(stem: &str) -> &str {
    stem.rsplit('/')
        .find(|c| !c.is_empty() && *c != ".")
        .unwrap_or("")
}

fn add_member(out: &mut TarJson, member: &mut [u8], stem: &str, key_field: &str) -> Option<()> {
    for b in member.iter_mut().filter(|b| **b == b'\n') {
        *b = b' ';
    }
    let mut de = serde_json::Deserializer::from_slice(member);
    let fields = TopFields { key: key_field }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    let body = member.trim_ascii_end();
    if fields.has_key {
        out.lines.extend_from_slice(body);
    } else {
        // `{ … }` → `{ …, "key": "stem"}`: the key goes last, as `dict.setdefault` puts it.
        let close = body.len() - 1; // a JSON object ends with `}`
        out.lines.extend_from_slice(body[..close].trim_ascii_end());
        if fields.count > 0 {
            out.lines.push(b',');
        }
        out.lines
            .extend_from_slice(serde_json::to_string(key_field).ok()?.as_bytes());
        out.lines.push(b':');
        out.lines
            .extend_from_slice(serde_json::to_string(stem).ok()?.as_bytes());
        out.lines.push(b'}');
    }
    out.lines.push(b'\n');
    if out.rows == 0 {
        out.first_fields = fields.count + usize::from(!fields.has_key);
    }
    out.rows += 1;
    Some(())
}

struct Fields {
    count: usize,
    has_key: bool,
}

/// Reads one JSON object, noting its top-level field names and skipping their values.
struct TopFields<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for TopFields<'_> {
    type Value = Fields;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopFields<'_> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields {
            count: 0,
            has_key: false,
        };
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            fields.count += 1;
            fields.has_key |= name == self.key;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mc-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t{}.tar", members.len()));
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        path
    }

    #[test]
    fn members_become_lines_with_their_key() {
        let long = format!("{}/000002", "d".repeat(120)); // a GNU long name
        let members: Vec<(String, &[u8])> = vec![
            ("a/000001.json".into(), b"{\"text\": \"a\ndog\"}\n"),
            ("a/000001.JPG".into(), b"\xff\xd8"),
            (format!("{long}.json"), br#"{"key": "k2", "text": "cat"}"#),
            ("000003.json".into(), b"{ }"),
            ("notes.txt".into(), b"hello"),
        ];
        let refs: Vec<(&str, &[u8])> = members.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let got = tar_json(&tar_of(&refs), "key").unwrap();
        let text = String::from_utf8(got.lines).unwrap();
        assert_eq!(
            text,
            "{\"text\": \"a dog\",\"key\":\"000001\"}\n\
             {\"key\": \"k2\", \"text\": \"cat\"}\n\
             {\"key\":\"000003\"}\n"
        );
        assert_eq!((got.rows, got.first_fields), (3, 2));
        assert_eq!(got.images, vec![("000001".into(), "a/000001.JPG".into())]);
    }

    #[test]
    fn a_member_that_is_not_an_object_leaves_the_tar_to_the_row_reader() {
        for bad in [&b"[1, 2]"[..], b"{\"a\": 1} x", b"", b"{\"a\": NaN}"] {
            let path = tar_of(&[("1.json", br#"{"a": 1}"#), ("2.json", bad)]);
            assert_eq!(tar_json(&path, "key"), None, "{bad:?}");
        }
        assert_eq!(tar_json(Path::new("/nonexistent.tar"), "key"), None);
    }

    #[test]
    fn base_names_follow_pathlib() {
        assert_eq!(base_name("a/b/c"), "c");
        assert_eq!(base_name("a/./"), "a");
        assert_eq!(base_name(""), "");
        assert_eq!(base_name("x"), "x");
    }
}
