"""``python -m metaclip.train`` / ``torchrun -m metaclip.train``: the ``metaclip-train`` CLI."""

from metaclip.train.cli import main

if __name__ == "__main__":
    main()
