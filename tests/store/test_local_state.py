"""The local state file every worker of a host shares (cds.store.local_state): one replay window
across processes, sessions that expire and close, failed-login counts."""
from __future__ import annotations

import multiprocessing

from cds.store.local_state import LocalState


def _take(path: str, keys: list[str], out) -> None:
    state = LocalState(path)
    out.put(sum(state.first_use(k, 2e9) for k in keys))


def test_two_processes_racing_on_the_same_jtis_accept_each_once(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    keys = [f"jti-{i}" for i in range(150)]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_take, args=(path, keys, out)) for _ in range(2)]
    for w in workers:
        w.start()
    accepted = out.get(timeout=120) + out.get(timeout=120)
    for w in workers:
        w.join(60)
    assert accepted == 150


def test_a_jti_is_remembered_until_it_expires(tmp_path):
    now = [1000.0]
    state = LocalState(tmp_path / "s.sqlite3", clock=lambda: now[0])
    assert state.first_use("k", 1010.0) and not state.first_use("k", 1010.0)
    now[0] = 1011.0
    assert state.first_use("k", 1020.0)                 # expired: a new token may reuse the id


def test_sessions_expire_and_close(tmp_path):
    now = [0.0]
    state = LocalState(tmp_path / "s.sqlite3", clock=lambda: now[0])
    state.open_session("a", 60)
    state.open_session("b", 60)
    assert state.session_live("a") and state.session_live("b") and not state.session_live("c")
    state.close_session("a")
    assert not state.session_live("a") and state.session_live("b")
    now[0] = 61
    assert not state.session_live("b")


def test_failed_logins_are_counted_per_client_within_the_window(tmp_path):
    now = [0.0]
    state = LocalState(tmp_path / "s.sqlite3", clock=lambda: now[0])
    for _ in range(3):
        state.record_login_failure("10.0.0.1")
    state.record_login_failure("10.0.0.2")
    assert state.login_failures("10.0.0.1", 300) == 3 and state.login_failures("10.0.0.2", 300) == 1
    now[0] = 301
    assert state.login_failures("10.0.0.1", 300) == 0
    state.record_login_failure("10.0.0.2")
    state.clear_login_failures("10.0.0.2")
    assert state.login_failures("10.0.0.2", 300) == 0
