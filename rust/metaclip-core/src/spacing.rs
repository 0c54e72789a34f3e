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
        // Blocks of 16 bytes with no byte to change are copied whole (most blocks of Han
        // or Thai text, whose bytes are all above ASCII).
        let b = text.as_bytes();
        let mut at = 0;
        while at + 16 <= b.len() {
            if special_mask(b, at) == 0 {
                out.extend_from_slice(&b[at..at + 16]);
            } else {
                for &c in &b[at..at + 16] {
                    push_ascii(c, out);
                }
            }
            at += 16;
        }
        for &c in &b[at..] {
            push_ascii(c, out);
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

/// Byte classes for [`for_each_token`]: 1 = becomes a space, 2 = wrapped in spaces.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b' ' as usize] = 1;
    t[b'\t' as usize] = 1;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    let mut i = 0;
    while i < WRAPPED.len() {
        t[WRAPPED[i] as usize] = 2;
        i += 1;
    }
    t
};

/// Call `f(start, end)` on each interior token of `spacing(b)` split on `' '` (empty
/// tokens included; `b` already stripped), without building the spaced text: a wrapped
/// mark ends the current token and is a token of its own; a space, tab, newline or
/// return ends the current token. Offsets index `b`.
#[inline]
pub fn for_each_token(b: &[u8], mut f: impl FnMut(usize, usize)) {
    let mut start = 0;
    let mut base = 0;
    // Blocks of 16 bytes: a bit mask of the bytes that end a token, then one step per
    // token instead of a branch per byte (a byte loop mispredicts at every token end).
    while base < b.len() {
        let mut mask = special_mask(b, base);
        while mask != 0 {
            let i = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            f(start, i);
            if CLASS[b[i] as usize] == 2 {
                f(i, i + 1);
            }
            start = i + 1;
        }
        base += 16;
    }
    f(start, b.len());
}

/// Bit `k` set iff `b[at + k]` (k < 16, within `b`; `at < b.len()`) is a space, tab,
/// newline, return or wrapped mark.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_mask(b: &[u8], at: usize) -> u32 {
    if let Some(full) = b.get(at..at + 16) {
        return block_mask(full);
    }
    if let Some(from) = b.len().checked_sub(16) {
        // The last 16 bytes, shifted down to `at`: a text's last block costs no copy.
        return block_mask(&b[from..]) >> (at - from);
    }
    // Zero bytes are never special, so padding adds no bits.
    let mut tail = [0u8; 16];
    let rest = b.get(at..).unwrap_or_default();
    tail[..rest.len()].copy_from_slice(rest);
    block_mask(&tail)
}

/// [`special_mask`] of the first 16 bytes of `block` (at least 16).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_mask(block: &[u8]) -> u32 {
    use std::arch::x86_64::*;
    assert!(block.len() >= 16);
    // SAFETY: SSE2 is part of the x86_64 baseline; the load reads 16 bytes of `block`.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr() as *const __m128i);
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        let controls = _mm_or_si128(
            _mm_or_si128(eq(b' '), eq(b'\t')),
            _mm_or_si128(eq(b'\n'), eq(b'\r')),
        );
        let marks = _mm_or_si128(
            _mm_or_si128(
                _mm_or_si128(eq(WRAPPED[0]), eq(WRAPPED[1])),
                _mm_or_si128(eq(WRAPPED[2]), eq(WRAPPED[3])),
            ),
            _mm_or_si128(_mm_or_si128(eq(WRAPPED[4]), eq(WRAPPED[5])), eq(WRAPPED[6])),
        );
        _mm_movemask_epi8(_mm_or_si128(controls, marks)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn special_mask(b: &[u8], at: usize) -> u32 {
    let end = (at + 16).min(b.len());
    let mut mask = 0;
    for (k, &c) in b[at..end].iter().enumerate() {
        mask |= ((CLASS[c as usize] != 0) as u32) << k;
    }
    mask
}

/// `spacing(text.strip())` as a `String`.
#[cfg(test)]
fn spaced(text: &str) -> String {
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
    fn tokens_equal_split_of_spaced_text() {
        let long = [
            "a".repeat(15) + "," + &"b".repeat(16) + " c",
            "x".repeat(16) + "." + &"y ".repeat(9) + "\t\r\n`:?" + &"z".repeat(31) + "!",
            ",".repeat(40),
            "word ".repeat(20) + "déjà vu; 猫 " + &"q".repeat(17),
        ];
        let short = ["a.b", "a. b", "", ".", " x\t,y ", "a  b", "\u{3000}猫,\n"];
        for text in short.iter().copied().chain(long.iter().map(|s| s.as_str())) {
            let s = spaced(text);
            let want: Vec<&[u8]> = s.as_bytes()[1..s.len() - 1].split(|&b| b == b' ').collect();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let b = py_strip(text).as_bytes();
            for_each_token(b, |s, e| got.push(b[s..e].to_vec()));
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn clean_blocks_copied_whole_match_bytewise_spacing() {
        let naive = |t: &str| {
            let mut s = format!(" {} ", py_strip(t));
            for p in [",", ".", ";", ":", "?", "!", "`"] {
                s = s.replace(p, &format!(" {p} "));
            }
            s.replace(['\t', '\n', '\r'], " ")
        };
        let texts = [
            "我的新相机很好".repeat(3) + "," + &"ฉันรักแมวมาก".repeat(2) + "\t。",
            "x".repeat(16) + "." + &"猫".repeat(11) + "\n" + &"y".repeat(15),
            "a".repeat(32) + "!",
            "ខ្មែរ".repeat(7),
        ];
        for t in &texts {
            assert_eq!(spaced(t), naive(t), "{t:?}");
        }
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(py_strip("\u{1c}a\u{3000}"), "a");
        assert_eq!(py_strip("\u{200b}a"), "\u{200b}a"); // ZWSP is not whitespace in Python
    }
}
