"""metaclip: fast, deterministic MetaCLIP / MetaCLIP 2 data curation and a lean CLIP trainer.

Importing this package is cheap: the Rust core (``metaclip._core``) and torch are loaded
only by the modules that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metaclip")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
