"""A small pure-Python statement of spec §2 and §6, to hold the Rust core against.

Deliberately naive: the `" " + entry + " " in spacing(text)` scan of the reference.
"""

from __future__ import annotations

import string

PUNCTS_TO_WRAP = [",", ".", ";", ":", "?", "!", "`"]
CHARS_TO_SPACE = ["\t", "\n", "\r"]

_CJK_RANGES = [
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF),
    (0x2E80, 0x2EFF), (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF), (0x0E00, 0x0E7F),
    (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
]  # fmt: skip
_MARKS = {
    0xFF0C, 0x3002, 0x3001, 0xFF1B, 0xFF1A, 0xFF1F, 0xFF01, 0x201C, 0x201D, 0x2018, 0x2019,
    0xFF08, 0xFF09, 0x3010, 0x3011, 0x300A, 0x300B, 0x3008, 0x3009, 0x300C, 0x300D, 0x300E,
    0x300F, 0xFF5E, 0x2014,
}  # fmt: skip
_KANA_HANGUL = [
    (0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF65, 0xFF9F), (0xAC00, 0xD7AF),
    (0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF),
]  # fmt: skip


def spacing(text: str) -> str:
    spaced_text = f" {text} "
    for p in PUNCTS_TO_WRAP:
        spaced_text = spaced_text.replace(p, f" {p} ")
    for c in CHARS_TO_SPACE:
        spaced_text = spaced_text.replace(c, " ")
    return spaced_text


def is_cjk_like(c: str) -> bool:
    o = ord(c)
    return any(a <= o <= b for a, b in _CJK_RANGES) or c in string.punctuation or o in _MARKS


def is_kana_or_hangul(c: str) -> bool:
    return any(a <= ord(c) <= b for a, b in _KANA_HANGUL)


def pattern(entry: str, mode: str) -> str:
    if mode == "mc1":
        return f" {entry} "

    def pads(c: str | None) -> bool:
        if c is None:
            return True
        if mode == "fixed":
            return not (is_cjk_like(c) or is_kana_or_hangul(c))
        return not is_cjk_like(c)

    left = " " if pads(entry[:1] or None) else ""
    right = " " if pads(entry[-1:] or None) else ""
    return left + entry + right


def prepare(text: str, mode: str) -> str:
    text = text.strip()
    if mode == "fixed":
        text = "".join(" " if c.isspace() else c for c in text)
    return spacing(text)


def naive_match(text: str, entries: list[str], mode: str = "mc1") -> list[int]:
    spaced = prepare(text, mode)
    return [i for i, e in enumerate(entries) if pattern(e, mode) in spaced]


# §6 coins, restated independently of the Rust code.
M64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def coin(seed: int, key: str, entry: int, epoch: int = 0) -> float:
    import xxhash

    h = xxhash.xxh3_64_intdigest(key.encode(), seed=seed)
    c = splitmix64((h + splitmix64((epoch << 32) | entry)) & M64)
    return (c >> 11) * 2.0**-53


def keep_pair(seed: int, key: str, ids: list[int], probs, epoch: int = 0) -> bool:
    return any(coin(seed, key, e, epoch) < probs[e] for e in ids)
