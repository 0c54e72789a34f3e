"""Samples from WebDataset tar shards, streamed member by member.

Three layouts are read as they are: ours (``KEY.jpg`` + ``KEY.json`` with ``texts``,
``entry_ids`` per text, ``lang``), img2dataset's (``KEY.jpg``, ``KEY.txt``, ``KEY.json``
with ``caption`` and any saved columns) and open_clip/LAION's (``KEY.jpg`` + ``KEY.txt``).
The members of a sample are adjacent in the tar (the WebDataset convention).

A sample that cannot be used is skipped and counted under one of ``SKIPS``; a shard that
cannot be opened, or that is cut short, is counted too (the samples before the cut are
used). Nothing here raises on bad data.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from metaclip._tar import IMAGE_EXTS, StrictTarInfo

log = logging.getLogger(__name__)

# Why a sample or a shard was skipped (the loader's metrics use these names).
SKIPS = (
    "bad_image",  # zero bytes, undecodable or truncated
    "too_large",  # more bytes or pixels than the limits
    "no_image",  # no image member
    "no_text",  # no caption in .json or .txt
    "bad_json",  # a .json member that is not a JSON object
    "bad_shard",  # a shard that cannot be opened or is not a tar
    "cut_shard",  # a shard that stops mid-member or mid-header (samples before it are used)
    "no_entry_ids",  # online curation, but the sample does not record its matches
    "bad_entry_ids",  # entry ids outside the probabilities, or a language they do not know
)
MAX_IMAGE_BYTES = 32 << 20


@dataclass
class Sample:
    """One sample: its key, image bytes and extension, and the parsed text fields."""

    key: str
    image: bytes
    ext: str
    meta: dict
    texts: list[str]
    entry_ids: list[list[int]] | None  # per text, when the shard records the matches
    langs: list[str | None] | None  # per text


def open_shard(url: str) -> IO[bytes]:
    """A local path, ``pipe:CMD``, ``http(s)://`` (webdataset's ``gopen``) or any other
    ``scheme://`` URL through fsspec (``s3://``, ``gs://``, … with their fsspec package)."""
    if url.startswith("pipe:") or url.startswith(("http://", "https://")):
        from webdataset.gopen import gopen

        return cast(IO[bytes], gopen(url, "rb"))
    if "://" in url and not url.startswith("file://"):
        try:
            import fsspec
        except ImportError:
            raise OSError(f"{url}: remote shards need fsspec (pip install fsspec)") from None
        return cast(IO[bytes], fsspec.open(url, "rb").open())
    return open(url.removeprefix("file://"), "rb")


def _members(url: str, skipped: Counter) -> Iterator[tuple[str, str, bytes | None]]:
    """``(key, ext, data)`` per regular member; data is None for a member over the size
    limit (not read). A shard that cannot be opened or is cut short is counted and logged."""
    try:
        f = open_shard(url)
    except OSError as e:
        skipped["bad_shard"] += 1
        log.warning("skipping training shard %s: %s", url, " ".join(str(e).split()))
        return
    read = 0
    try:
        with f, tarfile.open(fileobj=f, mode="r|*", tarinfo=StrictTarInfo) as tar:
            for m in tar:
                read += 1
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                key, _, ext = base.partition(".")
                if m.size > MAX_IMAGE_BYTES:
                    yield key, ext.lower(), None
                    continue
                data = cast(IO[bytes], tar.extractfile(m)).read()
                yield key, ext.lower(), data
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        why = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, tarfile.ReadError) and "opened successfully" in why:
            why = "not a tar archive"  # tarfile lists every compression it tried
        # nothing read: not a tar (or empty); else the tar stops early
        reason = "cut_shard" if read else "bad_shard"
        skipped[reason] += 1
        log.warning("training shard %s: %s (%s)", url, why, reason.replace("_", " "))


def _parse(key: str, parts: dict[str, bytes | None], skipped: Counter) -> Sample | None:
    """The sample of one key's members, or None (counted) when it cannot be used."""
    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if ext is None:
        skipped["no_image"] += 1
        return None
    image = parts[ext]
    if image is None:
        skipped["too_large"] += 1
        return None
    if not image:
        skipped["bad_image"] += 1
        return None
    meta: Any = {}
    if "json" in parts:
        try:
            raw = parts["json"]
            meta = json.loads(raw) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            meta = None
        if not isinstance(meta, dict):
            skipped["bad_json"] += 1
            return None
    texts, ids, langs = _texts(meta, parts.get("txt"))
    if not texts:
        skipped["no_text"] += 1
        return None
    return Sample(key, image, ext, meta, texts, ids, langs)


def _texts(meta: dict, txt: bytes | None) -> tuple[list[str], list[list[int]] | None, list | None]:
    """(texts, entry ids per text or None, language per text or None). ``entry_ids`` may be
    a list per text, or one list (the image's matches, then every text's); a text that is
    empty is dropped with its ids."""
    raw = meta.get("texts", meta.get("text", meta.get("caption")))
    if raw is None and txt is not None:
        raw = txt.decode("utf-8", "replace")
    texts = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    ids = meta.get("entry_ids")
    per_text: list[list[int]] | None = None
    if isinstance(ids, list):
        if ids and all(isinstance(x, list) for x in ids):
            per_text = [[int(i) for i in x] for x in ids]
        elif all(isinstance(x, int) for x in ids):  # the image's matches: every text's
            per_text = [[int(i) for i in ids] for _ in texts]
    if per_text is not None and len(per_text) != len(texts):
        per_text = None  # ids that do not line up with the texts are not used
    lang = meta.get("lang")
    langs: list | None = (
        [lang] * len(texts)
        if isinstance(lang, str)
        else list(lang)
        if isinstance(lang, list) and len(lang) == len(texts)
        else None
    )
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    return (
        [texts[i] for i in keep],
        [per_text[i] for i in keep] if per_text is not None else None,
        [langs[i] for i in keep] if langs is not None else None,
    )


def iter_samples(url: str, skipped: Counter) -> Iterator[Sample | None]:
    """Every sample of a shard in file order; None for one that cannot be used (counted in
    ``skipped``), so that a position counts every sample whether used or not."""
    key: str | None = None
    parts: dict[str, bytes | None] = {}
    for k, ext, data in _members(url, skipped):
        if k != key:
            if key is not None:
                yield _parse(key, parts, skipped)
            key, parts = k, {}
        parts[ext] = data
    if key is not None:
        yield _parse(key, parts, skipped)


def read_samples(url: str) -> tuple[list[Sample], Counter]:
    """All usable samples of one shard, and the skip counts (for evaluation sets)."""
    skipped: Counter = Counter()
    return [s for s in iter_samples(url, skipped) if s is not None], skipped
