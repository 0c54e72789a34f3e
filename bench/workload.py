"""Realistic MC1-shaped metadata and alt-text-like texts, generated offline.

Words and their frequencies come from the ``wordfreq`` package (its English list: ~320k
words with Zipfian frequencies from Wikipedia, subtitles, news, web text; pip-installable,
no download at run time). Without it a synthetic Zipfian vocabulary is used instead.

Metadata (MC1 proportions, spec §1): single words as "WordNet-like" + "unigram" entries
(lower case and Capitalised, since entries are case-sensitive), frequency-weighted word
pairs as "bigrams", 2–4 word Capitalised phrases as "titles", and "0".."99".
Texts: 4–24 words drawn by frequency, a capitalised start, commas/periods, sometimes a
number or a hyphenated word — like web alt-texts.
"""

from __future__ import annotations

import numpy as np


def vocabulary(n: int = 320_000) -> tuple[list[str], np.ndarray, str]:
    """(words, probabilities, source) sorted by decreasing frequency."""
    try:
        import wordfreq

        freq = wordfreq.get_frequency_dict("en")
        words = [w for w in wordfreq.top_n_list("en", n) if " " not in w]
        freqs = np.array([freq[w] for w in words], dtype=np.float64)
        source = "wordfreq (English)"
    except ImportError:
        rng = np.random.default_rng(0)
        syll = ["ka", "to", "ri", "mon", "sel", "ba", "dre", "lu", "vi", "nor", "es", "ti"]
        seen: set[str] = set()
        words = []
        while len(words) < n:
            w = "".join(rng.choice(syll, size=rng.integers(1, 5)))
            if w not in seen:
                seen.add(w)
                words.append(w)
        freqs = 1.0 / np.arange(1, n + 1) ** 1.05
        source = "synthetic Zipf (install wordfreq for real English words)"
    return words, freqs / freqs.sum(), source


def metadata(n_entries: int, words: list[str], probs: np.ndarray, seed: int = 0) -> list[str]:
    """A unique entry list of about MC1's shape, exactly ``n_entries`` long."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {str(i): None for i in range(100)}
    # ~67% single words (WordNet head names + unigrams), lower case then Capitalised.
    singles = int(n_entries * 0.67)
    for w in words:
        if len(out) >= singles:
            break
        out.setdefault(w)
        if len(out) < singles and rng.random() < 0.35:
            out.setdefault(w.capitalize())
    # ~20% bigrams from frequency-weighted pairs, ~12% titles; fill up to n_entries.
    top = min(len(words), 60_000)
    p_top = probs[:top] / probs[:top].sum()
    pool = rng.choice(top, size=4 * n_entries, p=p_top)  # drawn once: choice(p=...) is O(top)
    coins = rng.random(size=(4 * n_entries, 3))
    at = 0
    while len(out) < n_entries:
        if at + 4 > len(pool):
            pool = rng.choice(top, size=4 * n_entries, p=p_top)
            at = 0
        c = coins[at % len(coins)]
        k = (2, 2, 2, 3, 4)[int(c[1] * 5)] if c[0] < 0.4 else 2
        phrase = [words[i] for i in pool[at : at + k]]
        at += k
        if k > 2 or c[2] < 0.3:
            phrase = [w.capitalize() for w in phrase]
        out.setdefault(" ".join(phrase))
    return list(out)[:n_entries]


def texts(n: int, words: list[str], probs: np.ndarray, seed: int = 1) -> list[str]:
    """``n`` alt-text-like captions (mean ~70 bytes)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 25, size=n)
    flat = rng.choice(len(words), size=int(lengths.sum()), p=probs)
    marks = rng.random(int(lengths.sum()))
    out = []
    pos = 0
    for length in lengths:
        toks = [words[i] for i in flat[pos : pos + length]]
        m = marks[pos : pos + length]
        pos += length
        toks[0] = toks[0].capitalize()
        for j in range(1, len(toks)):
            if m[j] < 0.05:
                toks[j] = toks[j] + ","
            elif m[j] < 0.07:
                toks[j] = str(int(m[j] * 10_000) % 100)
            elif m[j] < 0.08:
                toks[j] = toks[j - 1] + "-" + toks[j]
            elif m[j] < 0.12:
                toks[j] = toks[j].capitalize()
        text = " ".join(toks)
        out.append(text + "." if m[0] < 0.5 else text)
    return out
