//! Which entries keep their pads (spec §2): the match modes and the CJK-like tables.

use crate::error::{Error, Result};

/// Which pattern rule to use (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// MetaCLIP 1: every pattern is `" " + entry + " "`.
    Mc1,
    /// MetaCLIP 2: pads only next to characters that are not CJK-or-similar.
    Mc2,
    /// Ours, opt-in: MC2 with kana and Hangul treated as CJK-like, and every Unicode
    /// whitespace character in a text treated as a space.
    Fixed,
}

impl Mode {
    /// Every mode, in the order the CLI lists them.
    pub const ALL: [Mode; 3] = [Mode::Mc1, Mode::Mc2, Mode::Fixed];

    /// The mode named `s` (`mc1`, `mc2` or `fixed`, any case).
    pub fn parse(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == lower)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown match mode {s:?} (expected mc1, mc2 or fixed)"
                ))
            })
    }

    /// The mode's name, as [`Mode::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Mc1 => "mc1",
            Mode::Mc2 => "mc2",
            Mode::Fixed => "fixed",
        }
    }

    /// Whether a pad goes next to this edge character of an entry.
    pub(super) fn pads(self, c: Option<char>) -> bool {
        match (self, c) {
            (Mode::Mc1, _) | (_, None) => true,
            (Mode::Mc2, Some(c)) => !is_cjk_like(c),
            (Mode::Fixed, Some(c)) => !(is_cjk_like(c) || is_kana_or_hangul(c)),
        }
    }
}

/// The MC2 reference's "CJK-or-similar" set (spec §2). Kana and Hangul are not in it.
pub fn is_cjk_like(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0x2CEB0..=0x2EBEF | 0xF900..=0xFAFF
        | 0x2E80..=0x2EFF | 0x2F00..=0x2FDF | 0x2FF0..=0x2FFF
        | 0x0E00..=0x0E7F | 0x0E80..=0x0EFF | 0x1000..=0x109F | 0x1780..=0x17FF
        | 0x0F00..=0x0FFF
        | 0xFF0C | 0x3002 | 0x3001 | 0xFF1B | 0xFF1A | 0xFF1F | 0xFF01 | 0x201C | 0x201D
        | 0x2018 | 0x2019 | 0xFF08 | 0xFF09 | 0x3010 | 0x3011 | 0x300A | 0x300B | 0x3008
        | 0x3009 | 0x300C | 0x300D | 0x300E | 0x300F | 0xFF5E | 0x2014)
        || c.is_ascii_punctuation()
}

/// Added by fixed mode: Hiragana, Katakana (with extensions and half-width forms) and
/// Hangul (syllables and jamo).
fn is_kana_or_hangul(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF65..=0xFF9F
        | 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F
        | 0xD7B0..=0xD7FF)
}
