"""Nothing written is lost: across restarts, processes, outages, a hung database and a killed writer."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from store_support import call_record, wait_until
from store_fixtures import backend, db, open_store  # noqa: F401 - pytest fixtures

WORKER = Path(__file__).with_name("store_worker.py")


def _count(db, sql="SELECT count(*) FROM cds_call", **params) -> int:
    return db.scalar(sql, **params)


def _run_worker(backend, spool_dir, tag, count, *flags) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), *sys.path])}
    return subprocess.Popen([sys.executable, str(WORKER), backend.url, str(spool_dir), tag, str(count), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_records_survive_closing_and_reopening_the_store(open_store, db):
    first = open_store()
    written = [call_record(f"pat-{i}") for i in range(25)]
    for record in written:
        first.record_call(record)
    first.close()  # no flush: close must write everything queued

    second = open_store()
    second.record_call(call_record("pat-after-restart"))
    second.close()
    ids = {row[0] for row in db.rows("SELECT call_id FROM cds_call")}
    assert {r.call_id for r in written} <= ids and len(ids) == 26


def test_records_of_a_process_that_exits_without_close_are_written(backend, open_store, db, tmp_path):
    open_store()  # creates the schema
    worker = _run_worker(backend, tmp_path / "spool", "exiting-process", 40, "--exit-without-close")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert _count(db, "SELECT count(*) FROM cds_call WHERE service_id = 'exiting-process'") == 40


def test_two_processes_write_one_audit_trail(backend, db, tmp_path):
    # Both start at once: they race to migrate the empty database and then write concurrently.
    workers = [_run_worker(backend, tmp_path / "spool", tag, 150) for tag in ("replica-a", "replica-b")]
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        assert "closed" in out
    per_process = dict(db.rows("SELECT service_id, count(*) FROM cds_call GROUP BY service_id"))
    assert per_process == {"replica-a": 150, "replica-b": 150}
    assert _count(db, "SELECT count(*) FROM cds_card") == 300
    assert _count(db, "SELECT count(DISTINCT patient_hash) FROM cds_call") == 300


def test_an_outage_spools_every_record_and_replays_each_exactly_once(backend, open_store, db, caplog):
    caplog.set_level(logging.INFO)
    store = open_store()
    before = [call_record(f"pat-before-{i}") for i in range(5)]
    for record in before:
        store.record_call(record)
    assert store.flush()

    backend.down()
    during = [call_record(f"pat-during-{i}") for i in range(60)]
    for record in during:
        store.record_call(record)  # returns at once: the writer thread meets the outage, not us
    assert store.flush(timeout=60)
    assert "audit database unavailable" in caplog.text
    assert not store.database_up
    assert store.spool.pending()
    assert _count(db) == 5  # read past the outage: none of it reached the database

    backend.up()
    assert wait_until(lambda: store.database_up and not store.spool.pending())
    after = call_record("pat-after")
    store.record_call(after)
    assert store.flush()

    ids = [row[0] for row in db.rows("SELECT call_id FROM cds_call")]
    assert sorted(ids) == sorted(r.call_id for r in [*before, *during, after])  # all there, none twice
    assert _count(db, "SELECT count(*) FROM cds_card") == 66
    assert "audit database reachable again" in caplog.text


def test_record_call_does_not_wait_for_a_hung_database(backend, open_store, db, caplog):
    # A database that accepts and never answers (PostgreSQL) or holds its write lock (SQLite) keeps
    # the writer waiting for a whole database timeout (30 s here). record_call must return meanwhile:
    # when the calls below have returned, no write has failed yet (the writer is still waiting) and
    # the safety timer that would restore the database has not fired.
    caplog.set_level(logging.INFO)
    store = open_store(db_timeout=30.0)
    store.record_call(call_record("pat-warm-up"))
    assert store.flush()
    backend.hang()
    safety_timer_fired = threading.Event()

    def restore():
        safety_timer_fired.set()
        backend.up()

    timer = threading.Timer(60.0, restore)
    timer.start()
    try:
        hung = [call_record(f"pat-hung-{i}") for i in range(50)]
        for record in hung:
            store.record_call(record)
        returned_while_hung = not safety_timer_fired.is_set()
        failed_before_return = "audit database unavailable" in caplog.text
        written_while_hung = _count(db, "SELECT count(*) FROM cds_call")
    finally:
        timer.cancel()
    backend.up()
    assert returned_while_hung
    assert not failed_before_return  # no call waited for the database's timeout
    assert written_while_hung == 1  # only the warm-up: the writer was still stuck when we returned
    assert wait_until(lambda: _count(db) == 51 and not store.spool.pending())


def test_a_full_queue_spills_to_the_spool_in_order(backend, open_store, db):
    store = open_store(queue_size=3, db_timeout=30.0)
    store.record_call(call_record("pat-warm-up"))
    assert store.flush()
    backend.hang()
    # The writer takes this one and blocks on the database with it (after lingering for more); only
    # then can the queue fill: while the writer is still gathering a batch it drains the queue as
    # fast as calls arrive (each call's journal write lets it run).
    store.record_call(call_record("pat-blocker"))
    time.sleep(0.5)
    records = [call_record(f"pat-spill-{i}") for i in range(20)]
    for record in records:
        store.record_call(record)
    assert store.spool.pending()   # the queue (3) filled; the rest spilled
    backend.up()
    assert wait_until(lambda: _count(db) == 22 and not store.spool.pending())
    assert store.flush()
    assert _count(db) == 22


def test_a_killed_process_leaves_its_spool_for_the_next_one(backend, open_store, db, tmp_path):
    open_store().close()  # schema in place
    backend.down()
    worker = _run_worker(backend, tmp_path / "spool", "killed-replica", 30, "--wait-spooled")
    try:
        assert worker.stdout.readline().strip() == "opened"
        assert worker.stdout.readline().strip() == "spooled"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=30)
    assert list((tmp_path / "spool").glob("spool-*.jsonl"))
    backend.up()

    survivor = open_store()  # opening replays the dead process's spool
    assert wait_until(lambda: not survivor.spool.pending())
    assert _count(db, "SELECT count(*) FROM cds_call WHERE service_id = 'killed-replica'") == 30
