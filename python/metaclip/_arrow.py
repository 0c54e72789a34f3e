"""Arrow plumbing shared by the public API and the pipeline (not public API itself):
texts as one contiguous buffer for Rust, large results in Arrow's reusable memory, and the
type tests the readers share. pyarrow is imported only when a function needs it."""

from __future__ import annotations

from typing import Any

import numpy as np


def alloc(nbytes: int) -> Any:
    """A buffer for a large result from Arrow's pool, which can reuse freed memory (a
    fresh ``bytearray`` of tens of MB costs fresh pages from the kernel every time)."""
    import pyarrow as pa

    return pa.allocate_buffer(nbytes)


def to_arrow(texts: Any) -> Any | None:
    """Return a pyarrow (chunked) array for Arrow-like inputs, else None."""
    mod = type(texts).__module__
    if mod.startswith("polars"):
        texts = texts.to_arrow()
        mod = type(texts).__module__
    if mod.startswith("pyarrow"):
        return texts
    return None


def contiguous(column: Any) -> Any:
    """One array for a pyarrow column: its only chunk as is (``combine_chunks`` copies even
    then, which for a shard's texts costs more than matching a tenth of them)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def packed_strings(arr: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data uint8, offsets int64[n+1], null indices) of a pyarrow string array.

    Works without copying the text bytes for ``large_string``; other string types are cast.
    """
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = contiguous(arr)
    if not (pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)):
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            arr = arr.cast(pa.large_binary())
        elif pa.types.is_null(arr.type):
            arr = pa.array([None] * len(arr), type=pa.large_string())
        else:
            arr = arr.cast(pa.large_string())
    nulls = np.zeros(0, dtype=np.int64)
    if arr.null_count:
        import pyarrow.compute as pc

        nulls = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)).astype(np.int64)
        arr = pc.fill_null(arr, "")  # a null matches nothing; it is reported in `null`
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    if data_buf is None:
        data = np.zeros(0, np.uint8)
    else:
        data = np.frombuffer(data_buf, dtype=np.uint8)
    return data, np.ascontiguousarray(offsets), nulls


def is_list_type(t: Any) -> bool:
    """A list or large_list Arrow type."""
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t)


def is_binary_type(t: Any) -> bool:
    """A binary or large_binary Arrow type."""
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t)
