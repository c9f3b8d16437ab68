"""Who may open the workbench. In development mode (CDS_AUTH=off) anyone; otherwise the holder of
the admin token, by bearer header or by the login page's cookie.

The service's JWT verifier is not what these tests are about (tests/service covers it): the app is
built in development mode and then given a verifier, which is what makes the service require
authentication, and an admin token."""
from __future__ import annotations

import pytest

from workbench_live import build_app, post_form

TOKEN = "workbench-admin-token-0123456789"


def _guarded(token: str | None = TOKEN):
    app = build_app(admin_token=token)
    runtime = app.extensions["pgx-cds"]
    runtime.verifier = object()      # any verifier: the service is no longer in development mode
    return app


@pytest.fixture(scope="module")
def guarded():
    return _guarded()


def test_development_mode_is_open_and_says_so(client):
    response = client.get("/workbench/")
    assert response.status_code == 200 and "development mode" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/workbench/", "/workbench/rules/default", "/workbench/try?drugs=clopidogrel",
                                 "/workbench/validation", "/workbench/statistics", "/workbench/guidelines"])
def test_every_page_needs_the_token(guarded, url):
    response = guarded.test_client().get(url)
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert 'name="token"' in page and "clopidogrel" not in page.replace('value="/workbench/try?drugs=clopidogrel"', "")


def test_pasting_needs_the_token(guarded):
    response = guarded.test_client().post("/workbench/try/request", data={"request": "{}"})
    assert response.status_code == 401


def test_bearer_header(guarded):
    client = guarded.test_client()
    assert client.get("/workbench/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/workbench/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/workbench/", headers={"Authorization": TOKEN}).status_code == 401


def test_login_sets_a_cookie_that_is_not_the_token(guarded):
    client = guarded.test_client()
    wrong = post_form(client, "/workbench/login", {"token": "nope", "next": "/workbench/rules"})
    assert wrong.status_code == 401 and "not right" in wrong.get_data(as_text=True)
    response = post_form(client, "/workbench/login", {"token": TOKEN, "next": "/workbench/rules"})
    assert response.status_code == 302 and response.headers["Location"] == "/workbench/rules"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/workbench" in cookie
    assert TOKEN not in cookie
    assert client.get("/workbench/rules").status_code == 200
    post_form(client, "/workbench/logout")
    assert client.get("/workbench/rules").status_code == 401


def test_login_never_redirects_off_the_workbench(guarded):
    response = post_form(guarded.test_client(), "/workbench/login", {"token": TOKEN, "next": "https://evil.example/"})
    assert response.headers["Location"] == "/workbench/"


def test_a_cookie_signed_with_another_token_is_refused():
    from itsdangerous import URLSafeTimedSerializer

    from cds.workbench.access import COOKIE

    client = _guarded().test_client()
    forged = URLSafeTimedSerializer("some-other-token", salt="pgx-cds workbench session v2").dumps({"sid": "x"})
    client.set_cookie(COOKIE, forged, path="/workbench")
    assert client.get("/workbench/").status_code == 401


def test_each_login_opens_a_new_session_and_logout_ends_it_for_good(guarded):
    from cds.workbench.access import COOKIE

    def login(client):
        response = post_form(client, "/workbench/login", {"token": TOKEN})
        assert response.status_code == 302
        return client.get_cookie(COOKIE, path="/workbench").value

    first_client, second_client = guarded.test_client(), guarded.test_client()
    first, second = login(first_client), login(second_client)
    assert first != second
    post_form(first_client, "/workbench/logout")
    replay = guarded.test_client()
    replay.set_cookie(COOKIE, first, path="/workbench")      # the old cookie, kept by an attacker
    assert replay.get("/workbench/").status_code == 401
    assert second_client.get("/workbench/").status_code == 200   # other sessions are untouched


def test_a_session_expires_server_side():
    from cds.workbench.access import COOKIE

    app = _guarded()
    app.extensions["pgx-cds"].settings.session_minutes = 1 / 60     # one second
    client = app.test_client()
    assert post_form(client, "/workbench/login", {"token": TOKEN}).status_code == 302
    cookie = client.get_cookie(COOKIE, path="/workbench").value
    assert client.get("/workbench/").status_code == 200
    import time
    time.sleep(2.1)
    replay = app.test_client()
    replay.set_cookie(COOKIE, cookie, path="/workbench")    # the browser would drop it; a thief would not
    assert replay.get("/workbench/").status_code == 401


def test_failed_logins_are_throttled():
    app = _guarded()
    client = app.test_client()
    attempts = app.extensions["pgx-cds"].settings.login_attempts
    for _ in range(attempts):
        assert post_form(client, "/workbench/login", {"token": "guess"}).status_code == 401
    refused = post_form(client, "/workbench/login", {"token": TOKEN})   # even the right token, for a while
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many failed attempts" in refused.get_data(as_text=True)


def test_a_401_says_how_to_authenticate(guarded):
    response = guarded.test_client().get("/workbench/")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_pages_carry_security_headers(guarded):
    response = guarded.test_client().get("/workbench/login")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_no_admin_token_configured_means_unavailable():
    response = _guarded(token=None).test_client().get("/workbench/")
    assert response.status_code == 503 and "CDS_ADMIN_TOKEN" in response.get_data(as_text=True)


def test_static_files_and_login_page_need_no_token(guarded):
    client = guarded.test_client()
    assert client.get("/workbench/static/workbench.css").status_code == 200
    assert client.get("/workbench/login").status_code == 200
