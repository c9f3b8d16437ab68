"""The audit journal (cds.store.journal): an entry is on disk before record_call returns, a process
killed before its writer ran loses nothing (the next process adopts its journal, and stores each
entry exactly once), and the journal is emptied as entries are settled."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from cds.store.journal import Journal
from store_fixtures import backend, open_store  # noqa: F401  (fixtures)
from store_support import AUDIT_KEY

HERE = Path(__file__).resolve().parent

_DIE_AFTER_RECORDING = """
import os, signal, sys
sys.path.insert(0, {here!r})
from cds.store import Store
from store_support import AUDIT_KEY, call_record
store = Store.open({url!r}, spool_dir={spool!r}, audit_key=AUDIT_KEY, retry_interval=60)
for i in range({count}):
    store.record_call(call_record(f"pat-{{i}}", service_id="killed"))
os.kill(os.getpid(), signal.SIGKILL)      # before the writer's first batch (it lingers 50 ms)
"""


def _calls(url: str, service_id: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("select count(*) from cds_call where service_id = :s"), {"s": service_id}).scalar()
    engine.dispose()
    return n


def test_a_process_killed_before_writing_loses_no_entry_and_none_is_stored_twice(backend, open_store, tmp_path):
    spool = tmp_path / "spool"
    script = _DIE_AFTER_RECORDING.format(here=str(HERE), url=backend.url, spool=str(spool), count=40)
    died = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert died.returncode == -9, died.stderr
    journals = list((spool / "journal").glob("journal-*.jsonl"))
    assert journals and sum(p.stat().st_size for p in journals) > 0        # the entries were left on disk
    assert _calls(backend.direct_url, "killed") < 40                        # and not (all) in the database

    store = open_store()                                                    # the next process adopts them
    assert store.flush()
    assert _calls(backend.direct_url, "killed") == 40
    assert not list((spool / "journal").glob("journal-*.jsonl")) or all(
        p.stat().st_size == 0 for p in (spool / "journal").glob("journal-*.jsonl"))
    second = open_store()                                                   # exactly once
    assert second.flush()
    assert _calls(backend.direct_url, "killed") == 40


def test_record_call_journals_before_it_returns_and_the_writer_empties_the_journal(open_store, tmp_path):
    from store_support import call_record, wait_until

    store = open_store()
    journal_dir = tmp_path / "spool" / "journal"
    store.record_call(call_record("pat-1"))
    assert store.flush()
    files = list(journal_dir.glob(f"journal-*-{os.getpid()}.jsonl"))
    assert len(files) == 1
    assert wait_until(lambda: files[0].stat().st_size == 0, timeout=10)     # settled: emptied, not deleted


def test_settling_empties_the_active_file_and_deletes_rotated_ones(tmp_path, monkeypatch):
    import cds.store.journal as journal_module

    journal = Journal(tmp_path)
    first = journal.append({"call_id": "a"})
    journal.append({"call_id": "b"})
    journal.settled({first: 1})
    (path,) = tmp_path.glob("journal-*.jsonl")
    assert path.stat().st_size > 0                     # one of two still unsettled
    journal.settled({first: 1})
    assert path.stat().st_size == 0

    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 10)
    old = journal.append({"call_id": "c" * 20})
    new = journal.append({"call_id": "d"})              # the active file is past 10 bytes: a new one
    assert new != old and len(list(tmp_path.glob("journal-*.jsonl"))) == 2
    journal.settled({old: 1})
    assert len(list(tmp_path.glob("journal-*.jsonl"))) == 1
    journal.close()                                      # "d" unsettled: its file stays for adoption
    assert len(list(tmp_path.glob("journal-*.jsonl"))) == 1


def test_a_live_processs_journal_is_never_adopted(tmp_path):
    owner = Journal(tmp_path)
    owner.append({"call_id": "live"})
    # another "process" (a second Journal: flock is per open file description, as between processes)
    other = Journal(tmp_path)
    handed: list[dict] = []
    assert other.adopt_orphans(lambda entries: handed.extend(entries) or True) == 0 and handed == []
    owner_path = next(tmp_path.glob("journal-*.jsonl"))
    os.close(owner._segments[max(owner._segments)].fd)   # the owner's process ends: its lock goes
    owner._segments.clear()
    assert other.adopt_orphans(lambda entries: handed.extend(entries) or True) == 1
    assert handed == [{"call_id": "live"}] and not owner_path.exists()
