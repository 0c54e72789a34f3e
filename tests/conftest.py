import os
import sys
from pathlib import Path

from hypothesis import settings

# Make `tests.reference` importable as `reference` from any test folder.
sys.path.insert(0, str(Path(__file__).parent))

# Property tests draw the same examples on every run, so a run fails only when the code
# changed, never on a newly drawn example (CI included). To search further, draw at random:
# `pytest --hypothesis-profile=explore` (or HYPOTHESIS_PROFILE=explore), then pin what it
# finds with @example.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))
