"""Fixtures of the card tests: every card the shipped knowledge and rules can produce."""
from __future__ import annotations

import pytest

from card_walk import all_recommendation_cards


@pytest.fixture(scope="session")
def renderer(engine):
    from cds.cards import CardRenderer

    return CardRenderer(engine.kb, engine)


@pytest.fixture(scope="session")
def every_card(engine, renderer):
    return all_recommendation_cards(engine, renderer)


@pytest.fixture(scope="session")
def service():
    """The service (create_app as gunicorn builds it) on loopback, development mode, no audit store."""
    from cds.service.app import create_app
    from cds.service.config import Settings
    from live_service import LiveServer

    live = LiveServer(create_app(Settings(auth_mode="off", audit=False)))
    yield live
    live.stop()


@pytest.fixture()
def smart_ehr():
    from smart_ehr import SmartEhr

    ehr = SmartEhr()
    yield ehr
    ehr.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium via the system chromedriver, as the workbench tests drive it: skipped
    without it locally, a failure when CDS_REQUIRE_BROWSER is set (CI)."""
    import os
    import shutil
    import tempfile

    from browser_paths import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium Python package")
    if missing:
        why = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
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
