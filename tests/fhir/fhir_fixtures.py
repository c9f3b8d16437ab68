"""Paths and loaders for the FHIR reading tests (imported by the test modules and conftest.py)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
EXAMPLES = SHARED / "fhir-examples"
FIXTURES = REPO / "tests" / "fixtures" / "fhir"


def load(relative: str) -> dict:
    """A fixture under tests/fixtures/fhir (a fresh copy: tests may modify it)."""
    return copy.deepcopy(json.loads((FIXTURES / relative).read_text(encoding="utf-8")))


def needs_shared() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip("../shared/fhir-examples is not present next to the repository")
