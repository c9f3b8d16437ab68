"""The README is the operator's manual: every environment variable the code reads is in its
configuration table, and every document it links exists."""
from __future__ import annotations

import re

from pgx_paths import REPO

ENV_NAME = re.compile(r"""["']((?:CDS|PGX)_[A-Z0-9_]+|DATABASE_URL)["']""")
LINK = re.compile(r"\]\(((?:docs|config|rules|hooks|guidelines)/[^)#]+)\)")


def _variables_read_by_the_code() -> set[str]:
    names = set()
    for path in (REPO / "cds").rglob("*.py"):
        names |= set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    return names


def _documented() -> set[str]:
    """Names in the first cell of any README table row (`| `CDS_FHIR_TIMEOUT`, `CDS_FHIR_BUDGET` | …`)."""
    names = set()
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_every_environment_variable_is_in_the_readme_table() -> None:
    missing = sorted(_variables_read_by_the_code() - _documented())
    assert missing == [], f"add these to the README's configuration table: {', '.join(missing)}"


def test_every_linked_document_exists() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [link for link in LINK.findall(readme) if not (REPO / link).exists()]
    assert missing == []
