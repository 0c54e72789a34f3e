//! A built matcher as a file that every process on a node maps read-only: the word tables
//! are used in place from the mapping (shared page-cache pages, no deserialisation), so 32
//! workers hold one copy instead of 32.
//!
//! Layout: a [`Header`] (magic, format version, byte-order mark, the metadata digest, the
//! counts) and nine sections, each 64-byte aligned: vocabulary slots, word bytes, word
//! spans, trie edge slots, root filter, and the substring automaton's character pages,
//! character codes, states and output links. Every table is used in place.
//!
//! The file is written to a temporary name and renamed, so a reader sees a whole file or
//! none; a file cut short (a crash before its pages reached the disk) fails the length
//! check. Its contents are otherwise trusted as ours (checking them would read every
//! page): a corrupted table makes lookups wrong, panic, or (a hash table with no empty
//! slot left, a cycle of failure links) loop forever, but never read out of bounds.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use memmap2::Mmap;
use xxhash_rust::xxh3::Xxh3Default;

use super::chars::CharAutomaton;
use super::trie::WordTrie;
use super::vocab::Vocab;
use super::{Matcher, Mode};
use crate::dedup;
use crate::error::{Error, Result};
use crate::flat::FlatMap;
use crate::mapped::Buf;

const MAGIC: [u8; 8] = *b"MCLIPMAT";
/// Bumped whenever the layout or the meaning of any table changes.
pub const FORMAT_VERSION: u32 = 3;
const BYTE_ORDER: u32 = 0x0102_0304;
const ALIGN: usize = 64;
const N_SECTIONS: usize = 9;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    version: u32,
    byte_order: u32,
    digest: [u8; 16],
    mode: u32,
    first_shift: u32,
    hash_check: u64,
    n_entries: u64,
    n_word_entries: u64,
    n_nodes: u64,
    vocab_len: u64,
    edges_len: u64,
    file_len: u64,
    /// (offset, byte length) of each section.
    sections: [[u64; 2]; N_SECTIONS],
}

/// The digest a matcher file is checked against: xxh3-128 of the mode and every entry
/// (length-prefixed, in id order).
pub fn metadata_digest<S: AsRef<str>>(entries: &[S], mode: Mode) -> [u8; 16] {
    let mut h = Xxh3Default::new();
    h.update(mode.name().as_bytes());
    h.update(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        let e = e.as_ref().as_bytes();
        h.update(&(e.len() as u64).to_le_bytes());
        h.update(e);
    }
    h.digest128().to_le_bytes()
}

/// Lowercase hex of a digest.
pub fn digest_hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn stale(path: &Path, msg: impl Into<String>) -> Error {
    Error::StaleFile {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

impl Matcher {
    /// The digest of the metadata and mode this matcher was built from.
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// Whether the tables (words and substring automaton) are used in place from a file
    /// mapping.
    pub fn is_mapped(&self) -> bool {
        self.words.vocab.parts().0.is_mapped() && self.substr.as_ref().is_none_or(|a| a.is_mapped())
    }

    /// Write the matcher to `path` atomically (a temporary file in the same folder, then
    /// a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (table, bytes, spans) = self.words.vocab.parts();
        let (edges, n_nodes, first, first_shift) = self.words.parts();
        let ac = self.substr.as_ref();
        let parts: [&[u8]; N_SECTIONS] = [
            table.slot_bytes(),
            bytes.as_bytes(),
            spans.as_bytes(),
            edges.slot_bytes(),
            first.as_bytes(),
            ac.map_or(&[], |a| a.pages.as_bytes()),
            ac.map_or(&[], |a| a.codes.as_bytes()),
            ac.map_or(&[], |a| a.states.as_bytes()),
            ac.map_or(&[], |a| a.outputs.as_bytes()),
        ];
        let mut header = Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
            byte_order: BYTE_ORDER,
            digest: self.digest,
            mode: Mode::ALL.iter().position(|&m| m == self.mode).unwrap_or(0) as u32,
            first_shift,
            hash_check: self.words.vocab.hash_check(),
            n_entries: self.n_entries as u64,
            n_word_entries: self.n_word_entries as u64,
            n_nodes: n_nodes as u64,
            vocab_len: table.len() as u64,
            edges_len: edges.len() as u64,
            file_len: 0,
            sections: [[0; 2]; N_SECTIONS],
        };
        let mut at = std::mem::size_of::<Header>();
        for (s, p) in header.sections.iter_mut().zip(&parts) {
            at = at.next_multiple_of(ALIGN);
            *s = [at as u64, p.len() as u64];
            at += p.len();
        }
        header.file_len = at as u64;

        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.tmp{}",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            w.write_all(bytemuck::bytes_of(&header))?;
            let mut at = std::mem::size_of::<Header>();
            for (s, p) in header.sections.iter().zip(&parts) {
                w.write_all(&[0u8; ALIGN][..s[0] as usize - at])?;
                w.write_all(p)?;
                at = (s[0] + s[1]) as usize;
            }
            w.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })
    }

    /// Map the matcher file at `path` read-only and use its tables in place. With
    /// `expect`, a file built from other metadata or another mode is refused
    /// ([`Error::StaleFile`]), as is a file of another format version.
    pub fn load(path: impl AsRef<Path>, expect: Option<&[u8; 16]>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: matcher files are only ever written whole under a temporary name and
        // renamed into place, never changed in place, so the mapped bytes do not change.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let map = Arc::new(map);
        let size = std::mem::size_of::<Header>();
        let header: Header = match map.get(..size) {
            Some(b) => bytemuck::pod_read_unaligned(b),
            None => return Err(stale(path, "not a matcher file (too short)")),
        };
        if header.magic != MAGIC {
            return Err(stale(path, "not a matcher file (bad magic)"));
        }
        if header.version != FORMAT_VERSION || header.byte_order != BYTE_ORDER {
            return Err(stale(
                path,
                format!(
                    "matcher file format {} (this build reads {FORMAT_VERSION}), or another byte order",
                    header.version
                ),
            ));
        }
        if header.file_len != map.len() as u64 {
            return Err(stale(path, "matcher file is truncated"));
        }
        if let Some(want) = expect {
            if &header.digest != want {
                return Err(stale(
                    path,
                    format!(
                        "matcher file was built from other metadata or mode (digest {}, expected {})",
                        digest_hex(&header.digest),
                        digest_hex(want)
                    ),
                ));
            }
        }
        let mode = *Mode::ALL
            .get(header.mode as usize)
            .ok_or_else(|| stale(path, "matcher file has an unknown mode"))?;
        let vocab_hash = Vocab::new().hash_check();
        if header.hash_check != vocab_hash {
            return Err(stale(
                path,
                "matcher file was written with another word hash",
            ));
        }
        let bad = |what: &str| stale(path, format!("matcher file: bad {what}"));
        let sec = |i: usize| -> Result<(usize, usize)> {
            let [o, n] = header.sections[i];
            Ok((
                usize::try_from(o).map_err(|_| bad("section"))?,
                usize::try_from(n).map_err(|_| bad("section"))?,
            ))
        };
        let (o, n) = sec(0)?;
        let vocab_len = usize::try_from(header.vocab_len).map_err(|_| bad("count"))?;
        let table = FlatMap::from_slots(Buf::mapped(&map, o, n)?, vocab_len)?;
        let (o, n) = sec(1)?;
        let bytes = Buf::mapped(&map, o, n)?;
        let (o, n) = sec(2)?;
        let spans = Buf::mapped(&map, o, n)?;
        let vocab = Vocab::from_parts(table, bytes, spans);
        let (o, n) = sec(3)?;
        let edges_len = usize::try_from(header.edges_len).map_err(|_| bad("count"))?;
        let edges = FlatMap::from_slots(Buf::mapped(&map, o, n)?, edges_len)?;
        let (o, n) = sec(4)?;
        let first = Buf::mapped(&map, o, n)?;
        let n_nodes = u32::try_from(header.n_nodes).map_err(|_| bad("count"))?;
        let words = WordTrie::from_parts(vocab, edges, n_nodes, first, header.first_shift)?;
        let (o, n) = sec(5)?;
        let substr = if n == 0 {
            None
        } else {
            let pages = Buf::mapped(&map, o, n)?;
            let (o, n) = sec(6)?;
            let codes = Buf::mapped(&map, o, n)?;
            let (o, n) = sec(7)?;
            let states = Buf::mapped(&map, o, n)?;
            let (o, n) = sec(8)?;
            let outputs = Buf::mapped(&map, o, n)?;
            Some(CharAutomaton::from_parts(pages, codes, states, outputs)?)
        };
        let n_entries = usize::try_from(header.n_entries).map_err(|_| bad("count"))?;
        let n_word_entries = usize::try_from(header.n_word_entries).map_err(|_| bad("count"))?;
        if n_word_entries > n_entries || (substr.is_none() && n_word_entries != n_entries) {
            return Err(bad("counts"));
        }
        Ok(Matcher {
            mode,
            n_entries,
            words,
            n_word_entries,
            substr,
            simd: dedup::Simd::detect(),
            digest: header.digest,
        })
    }
}
