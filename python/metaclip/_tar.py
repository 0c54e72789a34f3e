"""Reading tars strictly: ``tarfile`` takes a tar cut at a header boundary for a whole one.

Shared by the pool reader (``pipeline.tar_shards``) and the trainer's loader, so both say
the same of a cut tar.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

# Member extensions that hold a sample's image (WebDataset, img2dataset, LAION).
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class Cut(tarfile.ReadError):
    """A tar that stops before its end (see ``StrictTarInfo``)."""


# tarfile's header errors (not in its type stubs): a zero block (the end of a tar), no
# bytes, part of a block.
_ZERO_BLOCK, _NO_BYTES, _PART_BLOCK = (
    getattr(tarfile, name)
    for name in ("EOFHeaderError", "EmptyHeaderError", "TruncatedHeaderError")
)


class StrictTarInfo(tarfile.TarInfo):
    """Member headers read as ``tarfile`` reads them, except where it takes a tar cut short
    for a whole one: it ends a tar where the file stops at a header boundary or inside a
    header, and where a header is not one (corrupt), without a word. A tar ends with a
    zero block (writers add two; GNU tar and ``tarfile`` read one); a file that stops
    before it was cut, and is an error here, as in the Rust reader. (A member's data cut
    short ``tarfile`` reports itself: "unexpected end of data".) Headers at byte 0 keep
    ``tarfile``'s own errors, which ``tarfile.open`` needs to try decompressing."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> StrictTarInfo:
        at = tarfile_.offset
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as e:
            if at == 0 or isinstance(e, _ZERO_BLOCK):
                raise
            if isinstance(e, (_NO_BYTES, _PART_BLOCK)):
                name = tarfile_.name
                raise Cut(truncated(name if isinstance(name, str) else None)) from None
            raise Cut(f"no member header at byte {at} ({e}): corrupt, or cut short") from None


def truncated(path: str | Path | None) -> str:
    """What the Rust reader says of a tar cut short (``Truncated``)."""
    at = f" at byte {Path(path).stat().st_size}," if path else ""  # a stream has no size
    return f"truncated: the file stops{at} inside a member or before the end-of-archive blocks"
