"""Insert de-identified entries (calls with their cards and facts, feedback) into the database.

Every insert is keyed by an id the service generated, and a call or feedback already present is
skipped, so the same entry may arrive twice (from the queue and again from a spool replay) and be
stored once. Which failures are worth retrying is decided where the store meets the database
(cds.store.boundary).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from cds.store.schema import call_table, card_table, fact_table, feedback_table


def insert_entries(conn: Connection, entries: list[dict]) -> None:
    """A batch in three statements (calls, cards, facts) rather than three per call: under load the
    writer shares the worker's CPU with the requests. Calls already stored are skipped; if another
    process stores one between our check and our insert, the batch fails on its key and the writer
    retries it entry by entry (insert_entry skips duplicates one at a time)."""
    calls = {e["call_id"]: e for e in entries if e.get("kind") == "call"}
    if calls:
        stored = set(conn.execute(select(call_table.c.call_id).where(call_table.c.call_id.in_(list(calls)))).scalars())
        new = [e for cid, e in calls.items() if cid not in stored]
        if new:
            conn.execute(insert(call_table), [_call_row(e) for e in new])
            cards = [row for e in new for row in _card_rows(e)]
            facts = [row for e in new for row in _fact_rows(e)]
            if cards:
                conn.execute(insert(card_table), cards)
            if facts:
                conn.execute(insert(fact_table), facts)
    for entry in entries:
        if entry.get("kind") != "call":
            insert_entry(conn, entry)


def insert_entry(conn: Connection, entry: dict) -> None:
    kind = entry.get("kind")
    if kind == "call":
        _insert_call(conn, entry)
    elif kind == "feedback":
        _insert_feedback(conn, entry)
    else:
        raise ValueError(f"unknown entry kind {kind!r}")


def _insert_ignoring_duplicate(conn: Connection, table: Table, row: dict, key: str) -> bool:
    """Insert unless a row with the same primary key exists; True if inserted."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (dialect_insert(table).values(**row).on_conflict_do_nothing(index_elements=[key])
                 .returning(table.c[key]))  # rowcount is not reliable for this across drivers
    return conn.execute(statement).first() is not None


def _insert_call(conn: Connection, entry: dict) -> None:
    if not _insert_ignoring_duplicate(conn, call_table, _call_row(entry), "call_id"):
        return  # stored before: its cards and facts came with it
    cards, facts = _card_rows(entry), _fact_rows(entry)
    if cards:
        conn.execute(insert(card_table), cards)
    if facts:
        conn.execute(insert(fact_table), facts)


def _call_row(entry: dict) -> dict:
    return {
        "call_id": entry["call_id"],
        "recorded_at": datetime.fromisoformat(entry["time"]),
        "service_id": entry["service_id"],
        "hook": entry["hook"],
        "hook_instance": entry.get("hook_instance"),
        "patient_hash": entry.get("patient_hash"),
        "kb_version": entry["kb_version"],
        "consent": entry.get("consent"),
        "latency_ms": entry.get("latency_ms"),
        "unresolved_drugs": entry.get("unresolved_drugs") or [],
        "fhir_errors": entry.get("fhir_errors") or [],
        "reasons": entry.get("reasons") or [],
        "card_count": len(entry.get("cards") or []),
    }


def _card_rows(entry: dict) -> list[dict]:
    return [{"card_uuid": c["uuid"], "call_id": entry["call_id"], "position": i, "rule_id": c["rule_id"],
              "guideline_id": c.get("guideline_id"), "guideline_version": c.get("guideline_version"),
              "source": c.get("source"), "policy_version": c.get("policy_version"),
              "indicator": c["indicator"], "summary": c["summary"]}
             for i, c in enumerate(entry.get("cards") or [])]


def _fact_rows(entry: dict) -> list[dict]:
    return [{"call_id": entry["call_id"], "position": i, "gene": f["gene"], "phenotype": f.get("phenotype"),
              "lookup_key": f.get("lookup_key"), "source_ids": f.get("source_ids") or []}
             for i, f in enumerate(entry.get("facts") or [])]


def _insert_feedback(conn: Connection, entry: dict) -> None:
    row = {
        "feedback_id": entry["feedback_id"],
        "card_uuid": entry["card_uuid"],
        "service_id": entry["service_id"],
        "outcome": entry["outcome"],
        "outcome_at": datetime.fromisoformat(entry["outcome_at"]),
        "received_at": datetime.fromisoformat(entry["received_at"]),
        "accepted_suggestions": entry.get("accepted_suggestions") or [],
        "reason_system": entry.get("reason_system"),
        "reason_code": entry.get("reason_code"),
        "reason_display": entry.get("reason_display"),
        "user_comment": entry.get("user_comment"),
    }
    _insert_ignoring_duplicate(conn, feedback_table, row, "feedback_id")
