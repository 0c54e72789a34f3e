"""metaclip.train: a lean CLIP trainer (FSDP2, DCP checkpoints, online curation).

Import the submodules you need (``metaclip.train.config``, ``.model``, ``.train``, ...); this
package itself imports nothing heavy. Launch with
``torchrun --nproc_per_node N -m metaclip.train train config.toml --set key=value``.
"""

__all__ = ["main"]


def main() -> None:
    """The ``metaclip-train`` command line (see :mod:`metaclip.train.cli`)."""
    from metaclip.train.cli import main as _main

    _main()
