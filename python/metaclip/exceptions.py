"""Exception hierarchy shared by the Python package and the Rust core.

The Rust glue raises ``MetaclipError`` subclasses defined in ``metaclip._core``; they are
re-exported here so users never import from the private module.
"""


class MetaclipError(Exception):
    """Base class of every error metaclip raises on purpose."""


class MetadataError(MetaclipError, ValueError):
    """A metadata file or list is malformed (duplicates, bad JSON, bad line)."""


class InputError(MetaclipError, ValueError):
    """A pool shard or its columns cannot be used (names the file and row)."""
