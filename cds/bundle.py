"""Where the bundled knowledge (guidelines/, rules/, hooks/) lies: beside the package in a source
checkout or an editable install, or under <prefix>/share/pgx-cds when pgx-cds is installed from its
wheel (setuptools data-files, see pyproject.toml). $CDS_KNOWLEDGE_DIR overrides both (cds.knowledge.loader)."""
from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SHARE = Path("share") / "pgx-cds"


def bundled_root() -> Path:
    checkout = _PACKAGE.parent
    if (checkout / "guidelines").is_dir():
        return checkout
    # An installed wheel: data files land in the installation prefix (…/lib/python3.X/site-packages/cds
    # is four levels below it); sys.prefix covers a virtual environment's own installs.
    prefixes = [Path(sys.prefix)] + ([_PACKAGE.parents[3]] if len(_PACKAGE.parents) > 3 else [])
    for prefix in prefixes:
        if (prefix / SHARE / "guidelines").is_dir():
            return prefix / SHARE
    return checkout   # nothing found: the loader then names the missing guidelines/ folder
