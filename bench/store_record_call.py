"""How long does auditing a CDS call cost the request thread?

Compares, in one run on the same database, `Store.record_call` (queue + background writer) with
the baseline it replaces: inserting the same entry synchronously in the request thread. Then the
same record_call while the database is hung (SQLite: another connection holds the write lock;
the writer waits its timeout and spools). Prints medians and 99th percentiles and their ratios.

    /tmp/venv/bin/python bench/store_record_call.py [N]
    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test /tmp/venv/bin/python bench/store_record_call.py
"""
from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cds.store import CallRecord, CardRecord, FactRecord, Store
from cds.store.audit import insert_entry
from cds.store.records import audit_entry


def record(i: int) -> CallRecord:
    return CallRecord(
        service_id="pgx-order-select", hook="order-select", hook_instance=str(uuid.uuid4()),
        patient_id=f"bench-patient-{i}", kb_version="bench",
        cards=[CardRecord(str(uuid.uuid4()), "cpic-clopidogrel", "cpic-cyp2c19-clopidogrel", "2022-01", "warning",
                          "CYP2C19 poor metabolizer: avoid clopidogrel")],
        facts=[FactRecord("CYP2C19", "Poor Metabolizer", "Poor Metabolizer", ["Observation/bench"])],
        latency_ms=10.0)


def timed(fn, n: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    workdir = tempfile.mkdtemp(prefix="pgx-bench-")
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir}/bench.sqlite3"
    schema = None
    if url.startswith("postgresql"):  # a schema of its own on the shared server, dropped at the end
        schema = f"pgxcds_bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(url).set(query={"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    store = Store.open(url, spool_dir=f"{workdir}/spool", audit_key="b" * 32, db_timeout=2.0, retry_interval=0.5)

    def synchronous_insert(i: int) -> None:
        with store.engine.begin() as conn:
            insert_entry(conn, audit_entry(record(i), store.patient_hash))

    baseline = timed(synchronous_insert, n)
    queued = timed(lambda i: store.record_call(record(i)), n)
    store.flush(120)

    hung = None
    if store.engine.dialect.name == "sqlite":
        locker = sqlite3.connect(store.engine.url.database, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        hung = timed(lambda i: store.record_call(record(i)), n)
        locker.execute("ROLLBACK")
        locker.close()
    store.close()
    if schema:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    base_p50, base_p99 = summary(baseline)
    print(f"database: {store.engine.url.get_backend_name()}, {n} calls each")
    print(f"baseline  synchronous insert   p50 {base_p50:9.1f} µs   p99 {base_p99:9.1f} µs")
    for name, samples in (("record_call (database up)", queued), ("record_call (database hung)", hung)):
        if samples is None:
            continue
        p50, p99 = summary(samples)
        print(f"{name:29s} p50 {p50:9.1f} µs   p99 {p99:9.1f} µs   "
              f"= {p50 / base_p50:.3f}× / {p99 / base_p99:.3f}× baseline")


if __name__ == "__main__":
    main()
