"""A real pgx-cds service on loopback (werkzeug's HTTP server on a thread, the app built by
create_app exactly as gunicorn builds it) and a real FHIR server on loopback for the fetch path."""
from __future__ import annotations

import pytest

from fhir_server import FhirTestServer
from live_service import LiveServer


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    """The service in development mode (no JWT) with a SQLite audit store in a temp dir."""
    from cds.service.app import create_app
    from cds.service.config import Settings
    from cds.store import Store

    root = tmp_path_factory.mktemp("service")
    store = Store.open(f"sqlite:///{root / 'audit.sqlite3'}", spool_dir=root / "spool", audit_key="k" * 32)
    app = create_app(Settings(auth_mode="off", fhir_timeout=0.5, fhir_budget=1.0), store=store)
    live = LiveServer(app)
    yield live
    live.stop()
    store.close()


@pytest.fixture()
def fhir_server():
    """A loopback FHIR server (tests/fhir_server.py) the test fills with resources."""
    server = FhirTestServer()
    yield server
    server.stop()
