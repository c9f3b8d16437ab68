"""Fixtures of the workbench tests: the app, a live server on loopback, a service started on a copy
of the knowledge that a test then breaks, and headless Debian Chromium driven by Selenium with the
system chromedriver (Selenium Manager never runs: both binaries are given, and SE_OFFLINE forbids it
any download)."""
from __future__ import annotations

import pytest

from workbench_live import LiveServer, build_app, copy_knowledge


@pytest.fixture(scope="session")
def app():
    return build_app()


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def live(app):
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture()
def broken_knowledge(tmp_path):
    """A service started on a good copy of the knowledge; the test then breaks the copy on disk."""
    root = copy_knowledge(tmp_path / "knowledge")
    server = LiveServer(build_app(knowledge_dir=root))
    yield server, root
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from browser_paths import chromium_driver

    yield from chromium_driver()
