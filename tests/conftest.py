"""Shared test fixtures: the bundled knowledge base, compiled once per test session."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from pgx_paths import CPIC, REPO, SHARED  # noqa: F401  (re-exported for tests)

# One knowledge cache for this test session and the services it starts (not the user's ~/.cache), so
# a run starts from nothing and leaves nothing; tests of the cache itself set their own.
if "CDS_KNOWLEDGE_CACHE" not in os.environ:
    _KNOWLEDGE_CACHE = tempfile.mkdtemp(prefix="pgx-knowledge-cache-")
    os.environ["CDS_KNOWLEDGE_CACHE"] = _KNOWLEDGE_CACHE
    atexit.register(shutil.rmtree, _KNOWLEDGE_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def kb():
    from cds.knowledge.loader import load_knowledge

    return load_knowledge(REPO)


@pytest.fixture(scope="session")
def engine(kb):
    from cds.engine import Engine

    return Engine.from_knowledge(kb)
