"""Activation without a restart, over real HTTP: `cds serve` with 2 gunicorn workers on the test's
database (SQLite here, PostgreSQL in CI's second pass). After `cds policy approve`, every worker answers
with the new wording within 10 s; `cds policy rollback` brings the old one back the same way; each
card's audit row names the policy version that worded it. And inside one process: a call keeps the
policy version it started with while a newer one is swapped in."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import requests

from live_service import ServeProcess
from pgx_paths import REPO
from policy_support import NEW_WORDING, OLD_WORDING, add_people, antiplatelets, cds
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures

EXAMPLE = json.loads((REPO / "cds/workbench/examples/order-select-clopidogrel-cyp2c19.json").read_text())
DEADLINE = 10.0


def _summary(service) -> str:
    response = service.post("/cds-services/pgx-order-select", EXAMPLE)
    assert response.status_code == 200, response.text
    return next(c["summary"] for c in response.json()["cards"] if c["summary"].startswith("Clopidogrel"))


def _taken_up(service, version: int, pids: list[int], since: int) -> set[int]:
    """The workers whose log says they serve `version` (lines written after offset `since`)."""
    found = re.findall(rf"policy version {version} active in process (\d+)", service.log[since:])
    return {int(pid) for pid in found} & set(pids)


def _wait_for_every_worker(service, version: int, wording: str, since: int) -> float:
    pids = service.worker_pids()
    assert len(pids) == 2
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        if _taken_up(service, version, pids, since) == set(pids):
            break
        time.sleep(0.2)
    took = time.monotonic() - started
    assert _taken_up(service, version, pids, since) == set(pids), service.log[since:][-3000:]
    # whichever worker answers, it answers with the new policy: enough calls that both answer some
    for _ in range(12):
        assert wording in _summary(service)
    return took


def test_every_worker_takes_up_approval_and_rollback_without_a_restart(backend, db, tmp_path):
    url = backend.direct_url
    add_people(url, ("alice", "bob"))
    service = ServeProcess(tmp_path, env={"DATABASE_URL": url, "CDS_POLICY_POLL": "1"}, workers=2)
    try:
        master = service.process.pid
        assert OLD_WORDING in _summary(service)
        edited = antiplatelets(tmp_path / "edit", expect="prefer prasugrel")
        proposed = cds(url, "policy", "propose", str(edited), "--author", "alice", "--reason", "shorter", "--json")
        number = json.loads(proposed.stdout)["id"]
        assert OLD_WORDING in _summary(service)         # proposed, not approved: nothing changes
        mark = len(service.log)
        assert cds(url, "policy", "approve", str(number), "--approver", "bob").returncode == 0
        took = _wait_for_every_worker(service, number, NEW_WORDING, mark)
        print(f"both workers served version {number} {took:.1f} s after the approval returned")
        assert service.process.pid == master and service.process.poll() is None    # no restart

        mark = len(service.log)
        assert cds(url, "policy", "rollback", "--by", "bob", "--reason", "back").returncode == 0
        _wait_for_every_worker(service, 1, OLD_WORDING, mark)
        assert service.process.pid == master and service.process.poll() is None
    finally:
        log = service.stop()
    assert "Traceback" not in log
    versions = dict(db.rows("SELECT summary, policy_version FROM cds_card WHERE summary LIKE 'Clopidogrel%%' "
                            "GROUP BY summary, policy_version"))
    assert versions[next(s for s in versions if NEW_WORDING in s)] == number
    assert versions[next(s for s in versions if OLD_WORDING in s)] == 1


def test_a_refused_version_leaves_the_worker_on_the_last_good_one(backend, tmp_path):
    """A version that became active but fails here (its test case no longer passes against this
    service's knowledge) is refused by the worker, which keeps serving what it had."""
    from sqlalchemy import create_engine

    from cds.policy.store import PolicyStore

    url = backend.direct_url
    add_people(url, ("alice", "bob"))
    service = ServeProcess(tmp_path, env={"DATABASE_URL": url, "CDS_POLICY_POLL": "1"}, workers=1)
    try:
        store = PolicyStore(create_engine(url))
        good = store.version(1).files
        broken = {**good, "rules/antiplatelets.yaml": good["rules/antiplatelets.yaml"].replace(
            "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prasugrel or ticagrelor]",
            "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, warfarin]")}
        # written straight to the database, as a replica running other knowledge might have approved it
        number = store.add_version(broken, "alice", "written elsewhere", 1)
        store.record("bob", "activate", number, effective_at=datetime.now(timezone.utc))
        deadline = time.monotonic() + DEADLINE
        while f"policy version {number} refused" not in service.log and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"policy version {number} refused; still serving version 1" in service.log
        assert "lacks 'warfarin'" in service.log
        assert OLD_WORDING in _summary(service)
        assert requests.get(f"{service.url}/healthz", timeout=10).json()["policy_version"] == 1
        store.engine.dispose()
    finally:
        service.stop()


def test_a_service_starts_on_the_last_good_version(open_store, tmp_path, caplog):
    """The active version no longer passes here (e.g. the knowledge moved on under it): the service
    starts, on the version active before it, and says so, instead of failing to start."""
    from cds.policy.store import PolicyStore
    from cds.service.app import create_app
    from cds.service.config import Settings

    store = open_store()
    policy = PolicyStore(store.engine)
    policy.seed({name: (REPO / name).read_text() for name in
                 (f"rules/{p.name}" for p in sorted((REPO / "rules").glob("*.yaml")))})
    good = policy.version(1).files
    broken = {**good, "rules/antiplatelets.yaml": good["rules/antiplatelets.yaml"].replace(
        "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, prasugrel or ticagrelor]",
        "summary_contains: [Clopidogrel, CYP2C19 Poor Metabolizer, warfarin]")}
    number = policy.add_version(broken, "alice", "written elsewhere", 1)
    policy.record("bob", "activate", number, effective_at=datetime.now(timezone.utc))
    app = create_app(Settings(auth_mode="off", audit=True, local_state=str(tmp_path / "state.sqlite3")), store=store)
    runtime = app.extensions["pgx-cds"]
    assert runtime.policy.version == 1
    assert f"policy version {number} refused at start-up" in caplog.text
    assert app.test_client().get("/healthz").get_json()["policy_version"] == 1
