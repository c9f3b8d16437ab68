"""Shared test fixtures: the bundled knowledge base, compiled once per test session."""
from __future__ import annotations

import pytest

from pgx_paths import CPIC, REPO, SHARED  # noqa: F401  (re-exported for tests)


@pytest.fixture(scope="session")
def kb():
    from cds.knowledge.loader import load_knowledge

    return load_knowledge(REPO)


@pytest.fixture(scope="session")
def engine(kb):
    from cds.engine import Engine

    return Engine.from_knowledge(kb)
