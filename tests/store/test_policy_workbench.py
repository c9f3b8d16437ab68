"""The workbench's governance pages as people use them, on the test's database (SQLite; PostgreSQL in
CI's second pass): who may do what (a viewer cannot propose, an author cannot approve), CSRF on every
post, sessions as the rest of the workbench keeps them, passwords never stored or logged in clear, and
single sign-on against a real OpenID Connect provider on loopback (oidc-provider-mock, an Authlib
authorization server issuing RS256-signed ID tokens over HTTP)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import requests

from live_service import LiveServer
from pgx_paths import REPO
from policy_support import NEW_WORDING, PASSWORDS, ROLES
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures

EDIT = (REPO / "rules/antiplatelets.yaml").read_text().replace(
    "avoid; use prasugrel or ticagrelor if no contraindication", NEW_WORDING).replace(
    "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prasugrel or ticagrelor]",
    "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prefer prasugrel]")


def _app(store, tmp_path: Path, production: bool = True):
    from cds.service.app import create_app
    from cds.service.config import Settings

    app = create_app(Settings(auth_mode="off", audit=True, local_state=str(tmp_path / "local-state.sqlite3")),
                     store=store)
    if production:
        app.extensions["pgx-cds"].verifier = object()    # authentication required, as in production
    return app


@pytest.fixture
def app(open_store, tmp_path):
    app = _app(open_store(), tmp_path)
    from cds.workbench.governance import workflow

    with app.app_context():
        accounts = workflow().accounts
        for name, role in ROLES.items():
            accounts.add(name, role, "test", password=PASSWORDS[name])
    return app


def _token(client, page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(page).get_data(as_text=True))
    assert found, page
    return found.group(1)


def _sign_in(app, name: str, password: str | None = None):
    client = app.test_client()
    response = client.post("/workbench/login", data={"username": name, "password": password or PASSWORDS[name],
                                                      "csrf_token": _token(client, "/workbench/login"),
                                                      "next": "/workbench/policy"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def _propose(client, action: str = "propose", text: str = EDIT, token: str | None = None, **headers):
    token = token if token is not None else _token(client, "/workbench/policy/propose")
    return client.post("/workbench/policy/propose", headers=headers,
                       data={"file": "rules/antiplatelets.yaml", "text": text, "reason": "shorter wording",
                             "action": action, "csrf_token": token})


def test_a_viewer_reads_the_policy_but_cannot_propose(app):
    viewer = _sign_in(app, "vera")
    page = viewer.get("/workbench/policy")
    assert page.status_code == 200 and "version 1" in page.get_data(as_text=True)
    assert viewer.get("/workbench/policy/propose").status_code == 403
    assert _propose(viewer, token=_token(viewer, "/workbench/policy")).status_code == 403
    assert viewer.get("/workbench/accounts").status_code == 403


def test_an_author_proposes_but_cannot_approve_and_another_approver_can(app):
    author = _sign_in(app, "alice")
    proposed = _propose(author)
    assert proposed.status_code == 302
    number = int(proposed.headers["Location"].rsplit("/", 1)[1])
    own = author.post(f"/workbench/policy/versions/{number}/approve",
                      data={"csrf_token": _token(author, f"/workbench/policy/versions/{number}")})
    assert own.status_code == 403
    approver = _sign_in(app, "bob")
    page = approver.get(f"/workbench/policy/versions/{number}").get_data(as_text=True)
    assert 'id="approve-form"' in page
    done = approver.post(f"/workbench/policy/versions/{number}/approve",
                         data={"csrf_token": _token(approver, f"/workbench/policy/versions/{number}"),
                               "comment": "agreed"})
    assert done.status_code == 302
    shown = approver.get(f"/workbench/policy/versions/{number}").get_data(as_text=True)
    assert "approved, active" in shown and "approve</strong> by bob: agreed" in shown


def test_an_approver_cannot_approve_their_own_proposal(app):
    carol = _sign_in(app, "carol")
    number = int(_propose(carol).headers["Location"].rsplit("/", 1)[1])
    page = carol.get(f"/workbench/policy/versions/{number}").get_data(as_text=True)
    assert 'id="approve-form"' not in page and "cannot approve their own change" in page
    own = carol.post(f"/workbench/policy/versions/{number}/approve",
                     data={"csrf_token": _token(carol, f"/workbench/policy/versions/{number}")})
    assert own.status_code == 403 and "cannot approve" in own.get_data(as_text=True)


def test_every_post_needs_the_sessions_csrf_token(app, db):
    author = _sign_in(app, "alice")
    assert _propose(author, token="").status_code == 403
    other = _sign_in(app, "carol")      # a valid token, but of another session
    assert _propose(author, token=_token(other, "/workbench/policy")).status_code == 403
    cross_site = _propose(author, Origin="https://evil.example")
    assert cross_site.status_code == 403
    logout = author.post("/workbench/logout")                         # no token: not even a logout
    assert logout.status_code == 403
    assert db.scalar("SELECT count(*) FROM cds_policy_version") == 1  # nothing was proposed
    assert _propose(author).status_code == 302                        # with its own token it goes through


def test_session_cookie_rules_and_logout(app):
    client = app.test_client()
    response = client.post("/workbench/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                                     "csrf_token": _token(client, "/workbench/login")})
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("pgx_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/workbench" in cookie
    sid = client.get_cookie("pgx_session", path="/workbench").value
    assert client.get("/workbench/policy/propose").status_code == 200
    client.post("/workbench/logout", data={"csrf_token": _token(client, "/workbench/policy")})
    thief = app.test_client()
    thief.set_cookie("pgx_session", sid, path="/workbench")
    assert thief.get("/workbench/policy/propose").status_code in (302, 401)


def test_passwords_are_never_stored_or_logged_in_clear(app, db, caplog):
    caplog.set_level(logging.DEBUG)
    client = app.test_client()
    wrong = client.post("/workbench/login", data={"username": "alice", "password": "not-" + PASSWORDS["bob"],
                                                  "csrf_token": _token(client, "/workbench/login")})
    assert wrong.status_code == 401
    # a password typed into the user-name box is not recorded either
    client.post("/workbench/login", data={"username": PASSWORDS["carol"], "password": "x",
                                          "csrf_token": _token(client, "/workbench/login")})
    _sign_in(app, "bob")
    everything = " ".join(str(v) for table in ("cds_account", "cds_governance_event", "cds_workbench_session")
                          for row in db.rows(f"SELECT * FROM {table}") for v in row)
    for password in PASSWORDS.values():
        assert password not in everything and password not in caplog.text
    assert all(h.startswith("$argon2id$") for (h,) in db.rows("SELECT password_hash FROM cds_account"))
    assert ("alice", "login-failed") in db.rows("SELECT actor, action FROM cds_governance_event")


def test_an_admin_adds_an_account_and_a_disabled_account_is_signed_out(app, db):
    admin = _sign_in(app, "adam")
    added = admin.post("/workbench/accounts", data={"username": "erin", "role": "author", "password": "erin-password-01",
                                                    "csrf_token": _token(admin, "/workbench/accounts")})
    assert added.status_code == 302
    assert ("adam", "account-add", "erin") in db.rows("SELECT actor, action, subject FROM cds_governance_event")
    erin = _sign_in(app, "erin", "erin-password-01")
    assert erin.get("/workbench/policy/propose").status_code == 200
    admin.post("/workbench/accounts/erin", data={"change": "disable", "csrf_token": _token(admin, "/workbench/accounts")})
    assert erin.get("/workbench/policy/propose").status_code in (302, 401)


# --- single sign-on against a real OpenID Connect provider on loopback -----------------------------

@pytest.fixture
def provider():
    from oidc_provider_mock import User, run_server_in_thread

    people = [User(sub="sso-0001", claims={"preferred_username": "dana", "name": "Dana Approver",
                                          "groups": ["pgx-approvers", "staff"]}),
              User(sub="sso-0002", claims={"preferred_username": "otto", "groups": ["staff"]})]
    with run_server_in_thread(require_nonce=True, user_claims=people) as server:
        yield f"http://localhost:{server.server_port}"


def _sso(live, sub: str) -> tuple[requests.Session, requests.Response]:
    """A person signs in through the provider: our login button, the provider's form, back to us."""
    browser = requests.Session()
    start = browser.get(f"{live.url}/workbench/login/sso?next=/workbench/policy", allow_redirects=False, timeout=30)
    assert start.status_code == 302 and start.headers["Location"].startswith("http://localhost:")
    authorize = start.headers["Location"]
    assert "code_challenge=" in authorize and "nonce=" in authorize
    consent = browser.post(authorize, data={"sub": sub}, allow_redirects=False, timeout=30)
    assert consent.status_code == 302, consent.text
    callback = consent.headers["Location"]
    assert callback.startswith(f"{live.url}/workbench/login/sso/callback?")
    return browser, browser.get(callback, allow_redirects=False, timeout=30)


def test_single_sign_on_with_a_real_provider(open_store, tmp_path, provider, monkeypatch, db):
    monkeypatch.setenv("CDS_OIDC_ISSUER", provider)
    monkeypatch.setenv("CDS_OIDC_CLIENT_ID", "pgx-workbench")
    monkeypatch.setenv("CDS_OIDC_CLIENT_SECRET", "workbench-client-secret")
    monkeypatch.setenv("CDS_OIDC_ROLE_CLAIM", "groups")
    monkeypatch.setenv("CDS_OIDC_ROLE_MAP", "pgx-approvers=approver,pgx-authors=author")
    live = LiveServer(_app(open_store(), tmp_path))
    try:
        login = requests.get(f"{live.url}/workbench/login", timeout=30).text
        assert 'id="sso"' in login
        browser, landed = _sso(live, "sso-0001")
        assert landed.status_code == 200 and 'id="continue"' in landed.text
        page = browser.get(f"{live.url}/workbench/policy", timeout=30).text
        assert 'id="signed-in">Dana Approver' in page and "(approver)" in page
        assert ("dana", "approver") in db.rows("SELECT username, role FROM cds_account")
        assert ("dana", "login") in db.rows("SELECT actor, action FROM cds_governance_event")

        # a person the provider knows but with no group mapped to a role gets no account
        _, refused = _sso(live, "sso-0002")
        assert refused.status_code == 403 and "no workbench account" in refused.text

        # a callback replayed in another browser (no state cookie; state used once) is refused
        browser3 = requests.Session()
        start = browser3.get(f"{live.url}/workbench/login/sso", allow_redirects=False, timeout=30)
        consent = browser3.post(start.headers["Location"], data={"sub": "sso-0001"}, allow_redirects=False, timeout=30)
        stolen = requests.get(consent.headers["Location"], allow_redirects=False, timeout=30)
        assert stolen.status_code == 400 and "pgx_session" not in stolen.headers.get("Set-Cookie", "")
    finally:
        live.stop()


def test_statistics_show_each_rule_version(app):
    from store_support import call_record

    store = app.extensions["pgx-cds"].store
    store.record_call(call_record("pat-1", rule_id="clopidogrel-cyp2c19", cards=2, policy_version=1))
    store.record_call(call_record("pat-2", rule_id="clopidogrel-cyp2c19", cards=1, policy_version=2))
    page = _sign_in(app, "vera").get("/workbench/statistics").get_data(as_text=True)
    table = page[page.index('id="rule-version-table"'):]
    assert 'data-rule="clopidogrel-cyp2c19" data-version="1"' in table
    assert 'data-rule="clopidogrel-cyp2c19" data-version="2"' in table


def test_a_call_in_flight_keeps_the_version_it_started_with(app):
    """The service pins the policy per request: a version swapped in meanwhile serves the next call."""
    from cds.workbench.governance import workflow

    runtime = app.extensions["pgx-cds"]
    with app.app_context():
        gov = workflow()
        number = gov.propose({"rules/antiplatelets.yaml": EDIT}, "alice", "shorter")
    with app.test_request_context("/cds-services/pgx-order-select", method="POST"):
        started = runtime.snapshot
        assert started.version == 1
        with app.app_context():
            workflow().approve(number, "bob")
        assert runtime.policy.refresh() is True                  # the watcher's step, done now
        assert runtime.snapshot is started and runtime.advisor is started.advisor and runtime.kb is started.kb
        rule = next(r for r in runtime.kb.rules if r.id == "clopidogrel-cyp2c19")
        assert NEW_WORDING not in str(rule.adjustments)
    with app.test_request_context("/cds-services/pgx-order-select", method="POST"):
        assert runtime.snapshot.version == number
        rule = next(r for r in runtime.kb.rules if r.id == "clopidogrel-cyp2c19")
        assert NEW_WORDING in str(rule.adjustments)
