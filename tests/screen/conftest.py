"""Screening tests: a synthetic cohort written by `cds synth`, and the real service on loopback."""
from __future__ import annotations

import pytest

from live_service import LiveServer

AUDIT_KEY = "s" * 40


@pytest.fixture(scope="session")
def cohort(tmp_path_factory, kb):
    """200 synthetic patients (not clinical data) as Bulk Data NDJSON."""
    from cds.screen.synth import write_cohort

    folder = tmp_path_factory.mktemp("cohort")
    write_cohort(kb, 200, folder, seed=13)
    return folder


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory, kb):
    from cds.screen.synth import write_cohort

    folder = tmp_path_factory.mktemp("small")
    write_cohort(kb, 40, folder, seed=5)
    return folder


@pytest.fixture(scope="session")
def service():
    """`cds serve`'s app in development mode, auditing off (the calls below are the comparison, not care)."""
    from cds.service.app import create_app
    from cds.service.config import Settings

    live = LiveServer(create_app(Settings(auth_mode="off", audit=False)))
    yield live
    live.stop()
