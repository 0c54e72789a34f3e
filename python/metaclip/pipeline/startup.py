"""Start-up work that a curation process can skip.

pyarrow checks once per process whether pandas is importable, on its first conversion of
Python values (``pa.scalar``, ``pa.array``, ``pc.fill_null(x, 0)``, …), and imports it if
so: 0.25-0.3 s on our 2-core machine, inside the first shard read. The curation stages
never hand pandas objects to pyarrow, so a ``metaclip-curate`` process lets that one check
find no pandas. pandas stays importable for anything else in the process; only pyarrow
keeps treating pandas objects as plain Python objects.
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
