"""Where the browser lives for every browser test: Debian's chromium and chromedriver, and the flags this
machine's closed network needs (no background connections)."""
from __future__ import annotations

from pathlib import Path

from pgx_paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1800"]
