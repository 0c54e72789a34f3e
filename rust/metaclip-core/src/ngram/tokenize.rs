//! Tokenization for corpus n-gram counting (MetaCLIP 2 `build_ngram.py` semantics).
//!
//! * [`TokenMode::Simple`] is the reference `simple_tokenizer`: whitespace separates tokens,
//!   and every "CJK-or-similar" character (CJK ideographs, Thai, Lao, Myanmar, Khmer,
//!   Tibetan, ASCII punctuation and 26 extra marks) is a token of its own. For languages
//!   written with spaces this splits `dog's` into `dog`, `'`, `s`; for a language written
//!   without spaces and without a segmenter it yields character n-grams.
//! * [`TokenMode::Pretokenized`] splits on whitespace only: the input was segmented upstream
//!   (jieba, a Japanese analyser, pythainlp ...) and joined with spaces.
//!
//! Tokens made only of punctuation are not counted and break the bigram chain. With
//! `no_space` set, "weird" tokens (starting with punctuation, or with an unpaired bracket or
//! quote) are dropped the same way, as the reference does for no-space languages.

/// The 26 non-ASCII marks the reference n-gram builder treats as punctuation (the matching
/// spec's 25 marks plus `¿`).
pub const EXTRA_PUNCTUATION: [char; 26] = [
    '\u{FF0C}', '\u{3002}', '\u{3001}', '\u{FF1B}', '\u{FF1A}', '\u{FF1F}', '\u{00BF}', '\u{FF01}',
    '\u{201C}', '\u{201D}', '\u{2018}', '\u{2019}', '\u{FF08}', '\u{FF09}', '\u{3010}', '\u{3011}',
    '\u{300A}', '\u{300B}', '\u{3008}', '\u{3009}', '\u{300C}', '\u{300D}', '\u{300E}', '\u{300F}',
    '\u{FF5E}', '\u{2014}',
];

const PAIRED: [(char, char); 11] = [
    ('(', ')'),
    ('[', ']'),
    ('{', '}'),
    ('\u{201C}', '\u{201D}'),
    ('\u{2018}', '\u{2019}'),
    ('\u{FF08}', '\u{FF09}'),
    ('\u{3010}', '\u{3011}'),
    ('\u{300A}', '\u{300B}'),
    ('\u{3008}', '\u{3009}'),
    ('\u{300C}', '\u{300D}'),
    ('\u{300E}', '\u{300F}'),
];

/// How a line is split into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    /// Reference `simple_tokenizer` (see module docs).
    Simple,
    /// Whitespace only; the text was segmented upstream.
    Pretokenized,
}

impl TokenMode {
    /// The mode named `s`: `simple` or `pretokenized`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "simple" => Ok(TokenMode::Simple),
            "pretokenized" => Ok(TokenMode::Pretokenized),
            m => Err(crate::Error::invalid(format!(
                "mode must be 'simple' or 'pretokenized', got {m:?}"
            ))),
        }
    }
}

/// Python's `string.punctuation` or one of [`EXTRA_PUNCTUATION`].
#[inline]
pub fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_ascii() && EXTRA_PUNCTUATION.contains(&c))
}

/// True for a non-empty string made only of [`is_punct`] characters. (The empty string is
/// "pure punctuation" in the reference too: `all([])` is true.)
pub fn is_pure_punct(s: &str) -> bool {
    s.chars().all(is_punct)
}

/// The reference `is_cjk_or_similar`: CJK ranges, Thai, Lao, Myanmar, Khmer, Tibetan, or
/// punctuation.
#[inline]
pub fn is_cjk_or_similar(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x80 {
        return c.is_ascii_punctuation();
    }
    matches!(cp,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0x2CEB0..=0x2EBEF
        | 0xF900..=0xFAFF
        | 0x2E80..=0x2EFF
        | 0x2F00..=0x2FDF
        | 0x2FF0..=0x2FFF
        | 0x0E00..=0x0E7F
        | 0x0E80..=0x0EFF
        | 0x1000..=0x109F
        | 0x1780..=0x17FF
        | 0x0F00..=0x0FFF)
        || EXTRA_PUNCTUATION.contains(&c)
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus U+001C..U+001F).
#[inline]
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// The reference `check_weird_token` (applied to no-space languages only): the token starts
/// with punctuation, or contains one half of a bracket/quote pair without the other. (The
/// reference misspells the `『』` pair as `"『 "`; we check the pair as written.)
pub fn is_weird(token: &str) -> bool {
    match token.chars().next() {
        None => return false,
        Some(c) if is_punct(c) => return true,
        _ => {}
    }
    PAIRED
        .iter()
        .any(|&(open, close)| token.contains(open) != token.contains(close))
}

/// Remove HTML tags as the reference's `re.sub(r'(&lt;.*?&gt;|<.*?>)', '', text)` does on
/// one line: at each position, first try `&lt;` .. nearest `&gt;`, then `<` .. nearest `>`.
pub fn strip_html<'a>(line: &'a str, buf: &'a mut String) -> &'a str {
    if !line.contains('<') && !line.contains("&lt;") {
        return line;
    }
    buf.clear();
    let mut rest = line;
    loop {
        // next candidate start
        let lt = rest.find('<');
        let amp = rest.find("&lt;");
        let (start, is_amp) = match (lt, amp) {
            (None, None) => break,
            (Some(a), None) => (a, false),
            (None, Some(b)) => (b, true),
            (Some(a), Some(b)) => {
                if b < a {
                    (b, true)
                } else {
                    (a, false)
                }
            }
        };
        let end = if is_amp {
            rest[start + 4..].find("&gt;").map(|e| start + 4 + e + 4)
        } else {
            rest[start + 1..].find('>').map(|e| start + 1 + e + 1)
        };
        match end {
            Some(e) => {
                buf.push_str(&rest[..start]);
                rest = &rest[e..];
            }
            None => {
                // no closing mark: keep the opening char (ASCII) and go on after it
                buf.push_str(&rest[..=start]);
                rest = &rest[start + 1..];
            }
        }
    }
    buf.push_str(rest);
    buf.as_str()
}

/// Call `f(Some(token))` for each token of `line` and `f(None)` where the bigram chain
/// breaks (punctuation-only or dropped tokens). Empty tokens are never produced.
pub fn for_each_token<'a>(
    line: &'a str,
    mode: TokenMode,
    no_space: bool,
    mut f: impl FnMut(Option<&'a str>),
) {
    let mut emit = |tok: &'a str| {
        if is_pure_punct(tok) || (no_space && is_weird(tok)) {
            f(None);
        } else {
            f(Some(tok));
        }
    };
    let mut start: Option<usize> = None;
    for (i, c) in line.char_indices() {
        if is_space(c) {
            if let Some(s) = start.take() {
                emit(&line[s..i]);
            }
        } else if mode == TokenMode::Simple && is_cjk_or_similar(c) {
            if let Some(s) = start.take() {
                emit(&line[s..i]);
            }
            emit(&line[i..i + c.len_utf8()]);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        emit(&line[s..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(line: &str, mode: TokenMode, no_space: bool) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for_each_token(line, mode, no_space, |t| out.push(t.map(str::to_owned)));
        out
    }

    fn s(x: &str) -> Option<String> {
        Some(x.to_owned())
    }

    #[test]
    fn modes_by_name() {
        assert_eq!(TokenMode::parse("simple").unwrap(), TokenMode::Simple);
        assert_eq!(
            TokenMode::parse("pretokenized").unwrap(),
            TokenMode::Pretokenized
        );
        let err = TokenMode::parse("Simple").unwrap_err().to_string();
        assert!(
            err.contains("mode must be 'simple' or 'pretokenized', got \"Simple\""),
            "{err}"
        );
    }

    #[test]
    fn simple_splits_punctuation_and_cjk() {
        assert_eq!(
            toks("a dog's (toy)", TokenMode::Simple, false),
            vec![s("a"), s("dog"), None, s("s"), None, s("toy"), None]
        );
        assert_eq!(
            toks("北京大学 ok", TokenMode::Simple, true),
            vec![s("北"), s("京"), s("大"), s("学"), s("ok")]
        );
        // kana is not in the CJK-or-similar set: a kana run stays one token
        assert_eq!(
            toks("新しいカメラ", TokenMode::Simple, true),
            vec![s("新"), s("しいカメラ")]
        );
    }

    #[test]
    fn pretokenized_and_weird() {
        assert_eq!(
            toks("北京 大学 ， 《书", TokenMode::Pretokenized, true),
            vec![s("北京"), s("大学"), None, None]
        );
        assert_eq!(
            toks("a\u{1F}b", TokenMode::Pretokenized, false),
            vec![s("a"), s("b")]
        );
        assert!(is_weird("(abc"));
        assert!(is_weird("ab)"));
        assert!(!is_weird("a(b)c"));
        assert!(is_weird("』x"));
        assert!(is_weird("x』"));
    }

    #[test]
    fn html_is_stripped_like_the_reference_regex() {
        let mut b = String::new();
        assert_eq!(strip_html("<doc id=1>Title</doc>", &mut b), "Title");
        let mut b = String::new();
        assert_eq!(strip_html("a &lt;b&gt; c < d", &mut b), "a  c < d");
        let mut b = String::new();
        assert_eq!(strip_html("x &lt; y <i>z", &mut b), "x &lt; y z");
    }

    #[test]
    fn punctuation_sets() {
        assert!(is_punct('¿') && is_punct('，') && is_punct('!'));
        assert!(!is_punct('a') && !is_punct('«'));
        assert!(is_pure_punct("?!") && !is_pure_punct("a!"));
    }
}
