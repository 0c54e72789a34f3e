//! The JSON members of a WebDataset-style tar (`{key}.json` beside `{key}.jpg` …) as one
//! JSON-lines buffer, so that a JSON reader parses them all at once instead of one member
//! at a time.
//!
//! It gives exactly the rows the row-by-row reader (Python) builds, or nothing: each member
//! becomes one line (its newlines turned into spaces, as that reader does), and a member
//! without the key field gets `"key": "<its name's stem>"` as its last field. A member that
//! is not one JSON object, or that is longer than the caller reads of one, gives `None`:
//! the caller then reads the tar row by row, where such a member is a counted skip (and a
//! long one is skipped without being read).
//!
//! A tar cut short is an error ([`Truncated`]), never fewer rows: a tar ends with a zero
//! block where the next member header would be (writers add two, GNU tar reads one), so
//! a file whose bytes stop inside a header or a member's data, or at a member boundary
//! without that block, was cut.

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

/// A tar whose bytes stop before its end-of-archive block: inside a member header or a
/// member's data (a header that claims more bytes than follow), or where the next header
/// or the end-of-archive block should start.
#[derive(Debug, PartialEq, Eq)]
pub struct Truncated {
    /// The file's length: where its bytes stop.
    pub at: u64,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "truncated: the file stops at byte {}, inside a member or before the \
             end-of-archive blocks",
            self.at
        )
    }
}

impl std::error::Error for Truncated {}

/// The JSON members of the tar at `path` (see the module docs); `Ok(None)` when one of
/// them is not a JSON object or is longer than `max_member` bytes, when a member name is
/// not UTF-8, or when the tar cannot be read (the row-by-row reader then reads or reports
/// it); [`Truncated`] when the file stops before the tar's end.
pub fn tar_json(
    path: &Path,
    key_field: &str,
    max_member: u64,
) -> Result<Option<TarJson>, Truncated> {
    let Ok(file) = File::open(path) else {
        return Ok(None);
    };
    let mut archive = tar::Archive::new(SeekBuf {
        inner: BufReader::with_capacity(1 << 13, file),
        pos: 0,
        ran_out: false,
    });
    let got = members(&mut archive, key_field, max_member);
    let buf = archive.into_inner();
    if buf.ran_out {
        let at = buf.inner.get_ref().metadata().map_or(buf.pos, |m| m.len());
        return Err(Truncated { at });
    }
    Ok(got)
}

/// The archive's JSON members and image names (see [`tar_json`]), or `None`.
fn members<R: Read + Seek>(
    archive: &mut tar::Archive<R>,
    key_field: &str,
    max_member: u64,
) -> Option<TarJson> {
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
            if entry.size() > max_member {
                return None; // a counted skip, never read (a decompression bomb, say)
            }
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
///
/// It also notes whether a read found no bytes left (`ran_out`): the tar reader asks only
/// for bytes that headers say are there, and stops at the end-of-archive block, so it
/// runs out only on a tar cut short. (It takes running out where a header should start
/// for the end of the archive, and seeks past the end of the file without complaint.)
struct SeekBuf<R> {
    inner: BufReader<R>,
    pos: u64,
    ran_out: bool,
}

impl<R: Read> Read for SeekBuf<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ran_out |= n == 0 && !buf.is_empty();
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

    fn tar_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap() // with the two zero blocks
    }

    /// `data` in a file of its own (`tag` names it: tests run at once).
    fn file_with(tag: &str, data: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mc-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{tag}.tar"));
        std::fs::write(&path, data).unwrap();
        path
    }

    fn tar_of(tag: &str, members: &[(&str, &[u8])]) -> std::path::PathBuf {
        file_with(tag, &tar_bytes(members))
    }

    fn read(path: &Path) -> Result<Option<TarJson>, Truncated> {
        tar_json(path, "key", u64::MAX)
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
        let got = read(&tar_of("lines", &refs)).unwrap().unwrap();
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
        for (i, bad) in [&b"[1, 2]"[..], b"{\"a\": 1} x", b"", b"{\"a\": NaN}"]
            .into_iter()
            .enumerate()
        {
            let path = tar_of(
                &format!("bad{i}"),
                &[("1.json", br#"{"a": 1}"#), ("2.json", bad)],
            );
            assert_eq!(read(&path), Ok(None), "{bad:?}");
        }
        assert_eq!(read(Path::new("/nonexistent.tar")), Ok(None));
    }

    #[test]
    fn a_member_longer_than_the_limit_leaves_the_tar_to_the_row_reader() {
        let text = br#"{"text": "a dog"}"#;
        let path = tar_of("long", &[("1.json", text), ("2.jpg", &[0; 4000])]);
        let limit = text.len() as u64;
        assert!(tar_json(&path, "key", limit).unwrap().is_some()); // images are not read
        assert_eq!(tar_json(&path, "key", limit - 1), Ok(None));
    }

    /// a.json (header at 0), a.jpg (1024; data 1536..2736), b.json (3072; data at 3584),
    /// then the two zero blocks at 4096..5120.
    fn three_members() -> Vec<u8> {
        let image = [0xd8; 1200];
        let members: [(&str, &[u8]); 3] = [
            ("a.json", br#"{"text": "a dog"}"#),
            ("a.jpg", &image),
            ("b.json", br#"{"text": "a cat"}"#),
        ];
        let data = tar_bytes(&members);
        assert_eq!(data.len(), 5120);
        data
    }

    #[test]
    fn a_tar_cut_short_is_truncated() {
        let whole = three_members();
        for (what, cut) in [
            ("at a member boundary, without the end blocks", 4096),
            ("where a header should start", 3072),
            ("inside a header", 3072 + 100),
            ("inside a JSON member", 3584 + 5),
            ("inside an image", 1536 + 100),
            ("at the start", 0),
        ] {
            let path = file_with(&format!("cut{cut}"), &whole[..cut]);
            assert_eq!(read(&path), Err(Truncated { at: cut as u64 }), "{what}");
        }
        // A header that claims more bytes than follow (here its own padding and the end
        // blocks, and 2000 more).
        let mut claims = whole.clone();
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes().copy_from_slice(&claims[3072..3584]);
        h.set_size(4000);
        h.set_cksum();
        claims[3072..3584].copy_from_slice(h.as_bytes());
        let path = file_with("claims", &claims);
        assert_eq!(read(&path), Err(Truncated { at: 5120 }));
        let msg = Truncated { at: 5120 }.to_string();
        assert!(
            msg.starts_with("truncated: the file stops at byte 5120"),
            "{msg}"
        );
    }

    #[test]
    fn one_zero_block_or_more_ends_a_tar() {
        let whole = three_members();
        let mut padded = whole.clone();
        padded.resize(10240, 0); // Python's tarfile pads to a 10 kB record
        for (tag, data) in [("one", &whole[..4608]), ("two", &whole), ("pad", &padded)] {
            let got = read(&file_with(tag, data)).unwrap().unwrap();
            assert_eq!(got.rows, 2, "{tag}");
        }
    }

    #[test]
    fn base_names_follow_pathlib() {
        assert_eq!(base_name("a/b/c"), "c");
        assert_eq!(base_name("a/./"), "a");
        assert_eq!(base_name(""), "");
        assert_eq!(base_name("x"), "x");
    }
}
