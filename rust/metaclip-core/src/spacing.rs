//! Text preparation of spec §2: `text.strip()` then `spacing(text)`.
//!
//! Every character the reference touches is ASCII, so the work is done on UTF-8 bytes.

/// Characters the reference wraps in spaces.
pub const WRAPPED: [u8; 7] = [b',', b'.', b';', b':', b'?', b'!', b'`'];

/// Python's `str.isspace()` set, which `str.strip()` removes. It differs from Rust's
/// `char::is_whitespace`: U+001C..U+001F are in it.
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

/// Write `spacing(text.strip())` into `out` (cleared first).
///
/// With `all_whitespace` (fixed mode) every Unicode whitespace character becomes a space,
/// not only `\t`, `\n` and `\r`.
pub fn spaced_into(text: &str, all_whitespace: bool, out: &mut Vec<u8>) {
    out.clear();
    let text = py_strip(text);
    out.reserve(text.len() + 16);
    out.push(b' ');
    if all_whitespace {
        for c in text.chars() {
            if is_py_space(c) || c.is_whitespace() {
                out.push(b' ');
            } else if c.is_ascii() {
                push_ascii(c as u8, out);
            } else {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    } else {
        for &b in text.as_bytes() {
            push_ascii(b, out);
        }
    }
    out.push(b' ');
}

#[inline]
fn push_ascii(b: u8, out: &mut Vec<u8>) {
    match b {
        b',' | b'.' | b';' | b':' | b'?' | b'!' | b'`' => out.extend_from_slice(&[b' ', b, b' ']),
        b'\t' | b'\n' | b'\r' => out.push(b' '),
        _ => out.push(b),
    }
}

/// `spacing(text.strip())` as a `String` (for tests and small callers).
pub fn spaced(text: &str) -> String {
    let mut out = Vec::new();
    spaced_into(text, false, &mut out);
    // Only ASCII bytes were inserted or replaced, so the bytes stay valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_punctuation_and_spaces_controls() {
        assert_eq!(spaced("a,b"), " a , b ");
        assert_eq!(spaced("Hot dog\tstand"), " Hot dog stand ");
        assert_eq!(spaced("  x.  "), " x .  ");
        assert_eq!(spaced(""), "  ");
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(py_strip("\u{1c}a\u{3000}"), "a");
        assert_eq!(py_strip("\u{200b}a"), "\u{200b}a"); // ZWSP is not whitespace in Python
    }
}
