"""The workbench served for real: the app built by create_app (as gunicorn builds it) on werkzeug's
HTTP server on loopback, a copy of the knowledge in a temp dir for tests that break it, and headless
Debian Chromium driven by Selenium with the system chromedriver (Selenium Manager never runs: both
binaries are given, and SE_OFFLINE forbids it any download)."""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from pgx_paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1800"]


class LiveServer:
    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


def build_app(**settings):
    from cds.service.app import create_app
    from cds.service.config import Settings

    return create_app(Settings(auth_mode="off", audit=False, **settings))


def copy_knowledge(target: Path) -> Path:
    """The three knowledge folders, so a test can break a file without touching the repository."""
    for name in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / name, target / name)
    return target


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
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium Python package")
    if missing:
        why = (f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver; "
               "pip install selenium)")
        if os.environ.get("CDS_REQUIRE_BROWSER"):
            pytest.fail(why + "; CDS_REQUIRE_BROWSER is set, so this is a failure", pytrace=False)
        pytest.skip(why)
    profile = tempfile.mkdtemp(prefix="pgx-cds-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
