"""Helpers of the workbench tests: the app built by create_app (as gunicorn builds it) served by
werkzeug on loopback, a copy of the knowledge for tests that break it, where the browser lives."""
from __future__ import annotations

import shutil
from pathlib import Path

from browser_paths import ARTIFACTS, CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS  # noqa: F401  (re-exported)
from live_service import LiveServer  # noqa: F401  (re-exported for the workbench tests)
from pgx_paths import REPO



def build_app(**settings):
    from cds.service.app import create_app
    from cds.service.config import Settings

    import tempfile

    # Sessions and login throttling live in a state file: each app gets its own, so tests do not share them.
    settings.setdefault("local_state", str(Path(tempfile.mkdtemp(prefix="pgx-wb-")) / "local-state.sqlite3"))
    return create_app(Settings(auth_mode="off", audit=False, **settings))


def copy_knowledge(target: Path) -> Path:
    """The three knowledge folders, so a test can break a file without touching the repository."""
    for name in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / name, target / name)
    return target


def form_token(client, page: str = "/workbench/login") -> str:
    """The CSRF token a browser would find in a form of `page` (its cookie lands in the client's jar)."""
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(page).get_data(as_text=True))
    assert found, f"no form token on {page}"
    return found.group(1)


def post_form(client, path: str, data: dict | None = None, page: str = "/workbench/login", **kwargs):
    """Post as a browser posts a form: with the token from the page that holds it."""
    return client.post(path, data={**(data or {}), "csrf_token": form_token(client, page)}, **kwargs)
