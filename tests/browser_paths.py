"""Where the browser lives for every browser test: Debian's chromium and chromedriver, and the flags this
machine's closed network needs (no background connections)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from pgx_paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1800"]


def require_selenium() -> None:
    """Call at the top of a browser test module, before importing selenium: without the package the
    module is skipped locally and fails where CDS_REQUIRE_BROWSER is set (CI)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        if os.environ.get("CDS_REQUIRE_BROWSER"):
            raise
        pytest.skip("browser tests need the selenium package (pip install selenium); CI sets CDS_REQUIRE_BROWSER=1",
                    allow_module_level=True)


def wait_for(driver, css: str, timeout: float = 20):
    """The first element matching `css` once the page has it (selenium's explicit wait)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ready.presence_of_element_located((By.CSS_SELECTOR, css)))


def chromium_driver() -> Iterator[object]:
    """Headless Debian Chromium via the system chromedriver (Selenium Manager never runs: both binaries
    are given, and SE_OFFLINE forbids it any download). Skipped without them locally, a failure when
    CDS_REQUIRE_BROWSER is set (CI). Use it as a fixture body: `yield from chromium_driver()`."""
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
