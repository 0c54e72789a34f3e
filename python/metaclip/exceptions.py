"""Exception hierarchy shared by the Python package and the Rust core.

The classes are defined in the compiled module (``metaclip._core``), which raises them;
they are re-exported here, where they say they live (``__module__``), so users never import
from the private module. ``MetadataError``, ``InputError`` and ``ModelError`` are also
``ValueError`` subclasses; ``ModelError`` is a bad language-identification model file.
"""

from metaclip._core import InputError, MetaclipError, MetadataError, ModelError

__all__ = ["InputError", "MetaclipError", "MetadataError", "ModelError"]
