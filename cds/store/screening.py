"""The record of population screening runs (`cds screen`): written once at the end of a run, read
by the committee report. Counts only: no patient appears, not even as a pseudonym."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from cds.store import migrate
from cds.store.boundary import database_errors_said
from cds.store.engine import make_engine
from cds.store.records import utc
from cds.store.schema import screening_run_table

RECENT_RUNS = 20


def record_screening_run(summary: dict[str, Any], url: str | None = None,
                         finished_at: datetime | None = None) -> str:
    """Insert one run from its summary.json; returns the run id. CdsError if the database refuses."""
    run_id = str(uuid.uuid4())
    row = {
        "run_id": run_id,
        "started_at": utc(datetime.fromisoformat(summary["started_at"])),
        "finished_at": utc(finished_at or datetime.now(UTC)),
        "run_by": str(summary.get("run_by") or "")[:200],
        "kb_version": summary["knowledge_version"],
        "input_digest": summary["input"]["digest"],
        "source": summary["input"].get("source") or summary["input"].get("folder"),
        "engine": summary["engine"],
        "workers": int(summary["workers"]),
        "patients": int(summary["counts"]["patients"]),
        "counts": dict(summary["counts"]),
        "seconds": float(summary["timings"]["total_s"]),
    }
    engine = make_engine(url)
    try:
        with database_errors_said("the screening run could not be recorded in the audit database"):
            migrate.upgrade(engine)
            with engine.begin() as conn:
                conn.execute(screening_run_table.insert().values(**row))
    finally:
        engine.dispose()
    return run_id


def recent_runs(conn: Connection, since: datetime | None = None, limit: int = RECENT_RUNS) -> list[dict]:
    t = screening_run_table.c
    query = select(t.run_id, t.started_at, t.run_by, t.kb_version, t.input_digest, t.source, t.engine,
                   t.workers, t.patients, t.counts, t.seconds).order_by(t.started_at.desc()).limit(limit)
    if since is not None:
        query = query.where(t.started_at >= utc(since))
    runs = []
    for row in conn.execute(query):
        item = dict(row._mapping)
        item["started_at"] = utc(item["started_at"]).isoformat()
        runs.append(item)
    return runs
