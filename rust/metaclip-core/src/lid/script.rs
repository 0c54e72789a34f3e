//! Early exit on texts whose letters all belong to a script that one language owns.
//!
//! Only scripts that name a single language among the fastText lid.176 labels decide: Hangul
//! (with or without Han) → `ko`; kana (with or without Han) → `ja`; Thai, Lao, Tibetan,
//! Myanmar, Khmer, Sinhala, Thaana, Ethiopic, Greek, Armenian, Tamil, Telugu, Kannada,
//! Malayalam, Gujarati, Gurmukhi and Oriya → their language. Han alone (zh/ja/yue/wuu),
//! Latin, Cyrillic, Arabic, Devanagari, Bengali, Hebrew and Georgian (ka/xmf) are left to the
//! model. Digits, punctuation, symbols and spaces are ignored; a text with no letters at all
//! gets [`Verdict::NoLetters`].

/// What the script scan concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All letters are in a script owned by this language code.
    Language(&'static str),
    /// The text has no letters (empty, digits, punctuation, emoji...).
    NoLetters,
    /// Mixed or shared scripts: ask the model.
    Model,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Hangul,
    Kana,
    Han,
    Single(&'static str),
    Other,
    NotLetter,
}

fn script_of(c: char) -> Script {
    let u = c as u32;
    match u {
        0x1100..=0x11FF | 0x3130..=0x318F | 0xA960..=0xA97F | 0xAC00..=0xD7FF | 0xFFA0..=0xFFDC => {
            Script::Hangul
        }
        0x3040..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0x3005..=0x3007 | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF => Script::Han,
        0x20000..=0x3FFFF => Script::Han,
        0x0E00..=0x0E7F => Script::Single("th"),
        0x0E80..=0x0EFF => Script::Single("lo"),
        0x0F00..=0x0FFF => Script::Single("bo"),
        0x1000..=0x109F => Script::Single("my"),
        0x1780..=0x17FF | 0x19E0..=0x19FF => Script::Single("km"),
        0x0D80..=0x0DFF => Script::Single("si"),
        0x0780..=0x07BF => Script::Single("dv"),
        0x1200..=0x139F | 0x2D80..=0x2DDF => Script::Single("am"),
        0x0370..=0x03FF | 0x1F00..=0x1FFF => {
            if c.is_alphabetic() {
                Script::Single("el")
            } else {
                Script::NotLetter
            }
        }
        0x0530..=0x058F => Script::Single("hy"),
        0x0B80..=0x0BFF => Script::Single("ta"),
        0x0C00..=0x0C7F => Script::Single("te"),
        0x0C80..=0x0CFF => Script::Single("kn"),
        0x0D00..=0x0D7F => Script::Single("ml"),
        0x0A80..=0x0AFF => Script::Single("gu"),
        0x0A00..=0x0A7F => Script::Single("pa"),
        0x0B00..=0x0B7F => Script::Single("or"),
        _ => {
            if c.is_alphabetic() {
                Script::Other
            } else {
                Script::NotLetter
            }
        }
    }
}

/// Scan a text's letters. ASCII-only texts return at once (Latin or no letters).
pub fn verdict(text: &str) -> Verdict {
    if text.is_ascii() {
        return if text.bytes().any(|b| b.is_ascii_alphabetic()) {
            Verdict::Model
        } else {
            Verdict::NoLetters
        };
    }
    let (mut hangul, mut kana, mut han) = (false, false, false);
    let mut single: Option<&'static str> = None;
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphabetic() {
                return Verdict::Model;
            }
            continue;
        }
        match script_of(c) {
            Script::NotLetter => {}
            Script::Other => return Verdict::Model,
            Script::Hangul => hangul = true,
            Script::Kana => kana = true,
            Script::Han => han = true,
            Script::Single(code) => match single {
                None => single = Some(code),
                Some(s) if s == code => {}
                Some(_) => return Verdict::Model,
            },
        }
    }
    match (single, hangul, kana, han) {
        (None, false, false, false) => Verdict::NoLetters,
        (Some(code), false, false, false) => Verdict::Language(code),
        (None, true, false, _) => Verdict::Language("ko"),
        (None, false, true, _) => Verdict::Language("ja"),
        _ => Verdict::Model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_scripts() {
        assert_eq!(verdict("안녕하세요 세계"), Verdict::Language("ko"));
        assert_eq!(verdict("大韓民國 만세"), Verdict::Language("ko"));
        assert_eq!(verdict("ひらがな と カタカナ"), Verdict::Language("ja"));
        assert_eq!(verdict("日本語の文章です。"), Verdict::Language("ja"));
        assert_eq!(verdict("สวัสดีครับ 123"), Verdict::Language("th"));
        assert_eq!(verdict("Καλημέρα κόσμε"), Verdict::Language("el"));
        assert_eq!(verdict("Բարեւ"), Verdict::Language("hy"));
    }

    #[test]
    fn left_to_the_model() {
        assert_eq!(verdict("hello world"), Verdict::Model);
        assert_eq!(verdict("中文文本"), Verdict::Model);
        assert_eq!(verdict("Привет"), Verdict::Model);
        assert_eq!(verdict("שלום"), Verdict::Model);
        assert_eq!(verdict("Thai ไทย"), Verdict::Model);
        assert_eq!(verdict("ไทย Ελλάδα"), Verdict::Model);
        assert_eq!(verdict("한국 ひらがな"), Verdict::Model);
        assert_eq!(verdict("café"), Verdict::Model);
    }

    #[test]
    fn no_letters() {
        assert_eq!(verdict(""), Verdict::NoLetters);
        assert_eq!(verdict("  12:30 -- !!"), Verdict::NoLetters);
        assert_eq!(verdict("😀 ★ № 42"), Verdict::NoLetters);
    }
}
