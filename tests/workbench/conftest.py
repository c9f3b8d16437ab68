"""Fixtures of the workbench tests: the app, a live server on loopback, a service started on a copy
of the knowledge that a test then breaks, and headless Debian Chromium driven by Selenium with the
system chromedriver (Selenium Manager never runs: both binaries are given, and SE_OFFLINE forbids it
any download)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from workbench_live import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, LiveServer, build_app, copy_knowledge


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
