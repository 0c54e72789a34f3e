import sys
from pathlib import Path

# Make `tests.reference` importable as `reference` from any test folder.
sys.path.insert(0, str(Path(__file__).parent))
