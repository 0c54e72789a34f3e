"""Start-up work that a curation process can skip.

pyarrow imports pandas, when installed, on its first conversion of Python values: a cost
paid inside the first shard read of every one-shot run. The curation stages never hand
pandas objects to pyarrow, so ``metaclip-curate`` lets that one check find no pandas;
pandas stays importable for everything else in the process. Figures: see
docs/performance.md, section "Start-up and exit".
"""

from __future__ import annotations

import importlib.abc
import sys


class _HidePandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("hidden from pyarrow's pandas check", name=name)
        return None


def pyarrow_without_pandas() -> bool:
    """Let pyarrow's one pandas check run now with pandas hidden. Returns whether pyarrow
    now treats pandas as absent (False when pandas was imported already: then it stays in
    use)."""
    if "pandas" in sys.modules:
        return False
    import pyarrow as pa

    hide = _HidePandas()
    sys.meta_path.insert(0, hide)
    try:
        pa.scalar(0)  # a Python value: pyarrow's pandas check runs here (once)
    finally:
        sys.meta_path.remove(hide)
    return "pandas" not in sys.modules
