"""A real pgx-cds service on loopback (werkzeug's HTTP server on a thread, the app built by
create_app exactly as gunicorn builds it) and a real FHIR server on loopback for the fetch path."""
from __future__ import annotations

import pytest

from fhir_server import FhirTestServer
from live_service import LiveServer


def _live_service(tmp_path_factory, **settings):
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("service")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    live = LiveServer(create_app(Settings(auth_mode="off", **settings), store=store))
    yield live
    live.stop()
    store.close()


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """The service in development mode (no JWT) with a SQLite audit store in a temp dir, and the FHIR
    time limits of a production default: a test of what is fetched must not fail because a loaded
    machine (CI beside other work) took longer than a deliberately tight budget."""
    yield from _live_service(tmp_path_factory, fhir_timeout=2.0, fhir_budget=4.0)


@pytest.fixture(scope="session")
def budgeted_service(tmp_path_factory):
    """The same service with tight FHIR limits (0.5 s per request, 1 s for the call), for the tests
    that a failing FHIR server is given up within the budget."""
    yield from _live_service(tmp_path_factory, fhir_timeout=0.5, fhir_budget=1.0)


@pytest.fixture()
def fhir_server():
    """A loopback FHIR server (tests/fhir_server.py) the test fills with resources."""
    server = FhirTestServer()
    yield server
    server.stop()
