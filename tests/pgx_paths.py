"""Where the tests find the repository and the shared reference data (../shared, present in CI too)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CPIC = SHARED / "cpic"
