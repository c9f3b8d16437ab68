"""Helpers of the policy governance tests (tests/store, so CI runs them on SQLite and on PostgreSQL):
`cds policy`/`cds user` as an operator runs them, and rules files as a pharmacist edits them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pgx_paths import REPO

PASSWORDS = {"alice": "alice-password-0001", "bob": "bob-password-00002", "carol": "carol-password-0003",
             "vera": "vera-password-00004", "adam": "adam-password-00005"}
ROLES = {"alice": "author", "bob": "approver", "carol": "approver", "vera": "viewer", "adam": "admin"}
OLD_WORDING = "avoid; use prasugrel or ticagrelor if no contraindication"
NEW_WORDING = "avoid; prefer prasugrel (or ticagrelor) unless contraindicated"


def cds(url: str, *args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("CDS_KNOWLEDGE_DIR", None)
    return subprocess.run([sys.executable, "-m", "cds.cli", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180)


def add_people(url: str, names=("alice", "bob", "carol", "vera", "adam")) -> None:
    for name in names:
        result = cds(url, "user", "add", name, "--role", ROLES[name], stdin=PASSWORDS[name] + "\n")
        assert result.returncode == 0, result.stderr


def antiplatelets(folder: Path, old: str = OLD_WORDING, new: str = NEW_WORDING, expect: str | None = None) -> Path:
    """rules/antiplatelets.yaml with the poor-metabolizer summary reworded (and its test case following)."""
    text = (REPO / "rules/antiplatelets.yaml").read_text(encoding="utf-8")
    assert old in text
    text = text.replace(old, new)
    if expect is not None:
        text = text.replace("summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prasugrel or ticagrelor]",
                            f"summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, {expect}]")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "antiplatelets.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)
