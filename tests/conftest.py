"""Shared test fixtures: the bundled knowledge base, compiled once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CPIC = SHARED / "cpic"


@pytest.fixture(scope="session")
def kb():
    from cds.knowledge.loader import load_knowledge

    return load_knowledge(REPO)


@pytest.fixture(scope="session")
def engine(kb):
    from cds.engine import Engine

    return Engine.from_knowledge(kb)
