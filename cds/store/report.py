"""The pharmacy and therapeutics committee report: how often each rule fired and what clinicians did.

Counting rules (also in docs/governance.md):
  - a call or card belongs to the period when the call was made at or after `since`;
  - a card's outcome is its latest feedback (by outcomeTimestamp, then arrival): a card accepted and
    later overridden counts as overridden; a card without feedback counts as "no feedback" (CDS Hooks
    clients do not report ignored cards);
  - rates are over the cards issued: acceptance_rate = accepted / alerts, override_rate =
    overridden / alerts (None when a rule issued no card);
  - top override reasons count overridden cards by their latest reason Coding (system, code), each
    with its counterpart in the other system (ours ↔ HL7 non-adherence reason codes, where one
    matches); `override_reasons_hl7` counts them all by HL7 code, ours mapped (cds/override_reasons.py);
  - rules that never fired: every rule id the caller names that issued no card in the period;
  - orders we could not identify: each unresolved order of a call counts once under what was ordered
    (code and system, or the text alone) and why it stayed unresolved;
  - reasons: results and orders on file that were not used (unreadable, another patient's), counted
    per call and by kind (the reason's text after the resource id);
  - per rule and policy version: the same counts for each (rule, policy version) pair that issued cards,
    so a policy change can be judged after the fact (cards without a version: the rules/ files).
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from cds.consent import DENIED, NOT_PERMITTED, UNREADABLE
from cds.errors import CdsError
from cds.override_reasons import HL7_CODES, HL7_SYSTEM, both_codes
from cds.store.records import utc
from cds.store.schema import call_table, card_table, feedback_table
from cds.store.screening import recent_runs

FORMATS = ("table", "json", "csv")
TOP_REASONS = 10
TOP_UNRESOLVED = 10
TOP_REASONS_NOT_USED = 10
CONSENT_WITHHELD = (DENIED, NOT_PERMITTED, UNREADABLE)
NO_REASON = "(no reason given)"


def build_report(conn: Connection, since: datetime | None, all_rule_ids: Iterable[str] = (),
                 now: datetime | None = None) -> dict:
    since = utc(since) if since is not None else None
    in_period = [call_table.c.recorded_at >= since] if since is not None else []

    summary = _call_summary(conn, in_period)

    alerts: dict[str, int] = dict(conn.execute(
        select(card_table.c.rule_id, func.count())
        .select_from(card_table.join(call_table, card_table.c.call_id == call_table.c.call_id))
        .where(*in_period).group_by(card_table.c.rule_id)).all())

    latest = _latest_feedback()
    cards_with_outcome = (card_table.join(call_table, card_table.c.call_id == call_table.c.call_id)
                          .join(latest, latest.c.card_uuid == card_table.c.card_uuid))
    outcomes: dict[str, Counter] = {}
    for rule_id, outcome, count in conn.execute(
            select(card_table.c.rule_id, latest.c.outcome, func.count()).select_from(cards_with_outcome)
            .where(*in_period).group_by(card_table.c.rule_id, latest.c.outcome)):
        outcomes.setdefault(rule_id, Counter())[outcome] = count

    all_reasons = [
        {"system": system, "code": code, "display": display if code else NO_REASON, "count": count,
         **_equivalents(system, code)}
        for system, code, display, count in conn.execute(
            select(latest.c.reason_system, latest.c.reason_code, func.max(latest.c.reason_display),
                   func.count().label("n"))
            .select_from(cards_with_outcome).where(*in_period, latest.c.outcome == "overridden")
            .group_by(latest.c.reason_system, latest.c.reason_code)
            .order_by(func.count().desc(), latest.c.reason_system, latest.c.reason_code))
    ]
    reasons = all_reasons[:TOP_REASONS]

    known_rules = set(all_rule_ids)
    rules = []
    for rule_id in sorted(set(alerts) | known_rules, key=lambda r: (-alerts.get(r, 0), r)):
        issued = alerts.get(rule_id, 0)
        counted = outcomes.get(rule_id, Counter())
        accepted, overridden = counted["accepted"], counted["overridden"]
        rules.append({
            "rule_id": rule_id,
            "alerts": issued,
            "accepted": accepted,
            "overridden": overridden,
            "no_feedback": issued - accepted - overridden,
            "acceptance_rate": accepted / issued if issued else None,
            "override_rate": overridden / issued if issued else None,
        })

    return {
        "generated_at": utc(now or datetime.now(UTC)).isoformat(),
        "rule_versions": _rule_versions(conn, in_period, latest),
        "since": since.isoformat() if since is not None else None,
        **summary,
        "cards": sum(alerts.values()),
        "rules": rules,
        "top_override_reasons": reasons,
        "override_reasons_hl7": _as_hl7(all_reasons),
        "never_fired": sorted(known_rules - set(alerts)),
        "screening_runs": recent_runs(conn, since),
    }


def _equivalents(system: str | None, code: str | None) -> dict:
    """A reason's code in the other of our two systems: ours (`private_code`) and HL7's non-adherence
    reason code (`hl7_code`), None where the reason has none (cds/override_reasons.py)."""
    both = both_codes(system, code)
    return {"private_code": both.private if both else None, "hl7_code": both.hl7 if both else None}


def _as_hl7(reasons: list[dict]) -> list[dict]:
    """Overridden cards counted by HL7 non-adherence reason (ours mapped one to one where they match);
    a reason without an HL7 counterpart counts under its own system and code."""
    counts: Counter = Counter()
    for r in reasons:
        key = (HL7_SYSTEM, r["hl7_code"]) if r["hl7_code"] else (r["system"], r["code"])
        counts[key] += r["count"]
    out = []
    for (system, code), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0] or "", kv[0][1] or "")):
        display = HL7_CODES[code] if system == HL7_SYSTEM else \
            next((r["display"] for r in reasons if (r["system"], r["code"]) == (system, code)), None)
        out.append({"system": system, "code": code, "display": display, "count": n,
                    "standard": system == HL7_SYSTEM})
    return out


def _rule_versions(conn: Connection, in_period: list, latest) -> list[dict]:
    """Per rule and policy version (cds_card.policy_version; none: cards from before governance, or a
    service serving the rules/ files), the same counts as per rule: whether a change was for the better."""
    cards = card_table.join(call_table, card_table.c.call_id == call_table.c.call_id)
    key = (card_table.c.rule_id, card_table.c.policy_version)
    alerts = {(rule, version): n for rule, version, n in conn.execute(
        select(*key, func.count()).select_from(cards).where(*in_period).group_by(*key))}
    outcomes: dict[tuple, Counter] = {}
    for rule, version, outcome, n in conn.execute(
            select(*key, latest.c.outcome, func.count())
            .select_from(cards.join(latest, latest.c.card_uuid == card_table.c.card_uuid))
            .where(*in_period).group_by(*key, latest.c.outcome)):
        outcomes.setdefault((rule, version), Counter())[outcome] = n
    rows = []
    for (rule, version), issued in sorted(alerts.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        counted = outcomes.get((rule, version), Counter())
        accepted, overridden = counted["accepted"], counted["overridden"]
        rows.append({"rule_id": rule, "policy_version": version, "alerts": issued, "accepted": accepted,
                     "overridden": overridden, "no_feedback": issued - accepted - overridden,
                     "acceptance_rate": accepted / issued, "override_rate": overridden / issued})
    return rows


def _call_summary(conn: Connection, in_period: list) -> dict:
    """Counts over calls, streamed: the JSON list columns are read in Python, portably."""
    calls = withheld = with_errors = with_unresolved = with_reasons = 0
    unresolved: Counter = Counter()
    reason_kinds: Counter = Counter()
    kb_versions: set[str] = set()
    rows = conn.execution_options(yield_per=1000).execute(
        select(call_table.c.consent, call_table.c.fhir_errors, call_table.c.unresolved_drugs,
               call_table.c.kb_version, call_table.c.reasons).where(*in_period))
    for consent, fhir_errors, unresolved_drugs, kb_version, reasons in rows:
        calls += 1
        withheld += consent in CONSENT_WITHHELD
        with_errors += bool(fhir_errors)
        with_unresolved += bool(unresolved_drugs)
        with_reasons += bool(reasons)
        unresolved.update(unresolved_drugs or [])
        reason_kinds.update(_reason_kind(r) for r in reasons or [])
        kb_versions.add(kb_version)
    return {
        "calls": calls,
        "calls_consent_withheld": withheld,
        "calls_with_fhir_errors": with_errors,
        "calls_with_unresolved_drugs": with_unresolved,
        "top_unresolved_drugs": [{"drug": d, "count": n}
                                 for d, n in sorted(unresolved.items(), key=lambda kv: (-kv[1], kv[0]))
                                 [:TOP_UNRESOLVED]],
        "unresolved_orders": sum(unresolved.values()),
        "calls_with_reasons": with_reasons,
        "top_reasons_not_used": [{"reason": r, "count": n}
                                 for r, n in sorted(reason_kinds.items(), key=lambda kv: (-kv[1], kv[0]))
                                 [:TOP_REASONS_NOT_USED]],
        "kb_versions": sorted(kb_versions),
    }


def _reason_kind(reason: str) -> str:
    """'Observation/abc (HLA-B genotype): GL string is ambiguous …' → '(HLA-B genotype): GL string is
    ambiguous …': the resource id differs per call, the kind of reason is what the committee counts."""
    head, sep, rest = reason.partition(" ")
    return rest if sep and "/" in head else reason


def _latest_feedback():
    ranked = select(
        feedback_table.c.card_uuid, feedback_table.c.outcome, feedback_table.c.reason_system,
        feedback_table.c.reason_code, feedback_table.c.reason_display,
        func.row_number().over(
            partition_by=feedback_table.c.card_uuid,
            order_by=(feedback_table.c.outcome_at.desc(), feedback_table.c.received_at.desc(),
                      feedback_table.c.feedback_id.desc()),
        ).label("rank"),
    ).subquery()
    return select(ranked).where(ranked.c.rank == 1).subquery("latest_feedback")


# --- formatting ----------------------------------------------------------------------------------
CSV_COLUMNS = ("rule_id", "alerts", "accepted", "overridden", "no_feedback", "acceptance_rate",
               "override_rate", "never_fired")


def format_report(report: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "table":
        return _table(report)
    raise CdsError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    never = set(report["never_fired"])
    for rule in report["rules"]:
        writer.writerow([rule["rule_id"], rule["alerts"], rule["accepted"], rule["overridden"],
                         rule["no_feedback"], _rate(rule["acceptance_rate"], ""),
                         _rate(rule["override_rate"], ""), "yes" if rule["rule_id"] in never else "no"])
    return out.getvalue()


def _rate(value: float | None, empty: str = "-") -> str:
    return empty if value is None else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def not_counted(report: dict) -> str | None:
    """What the counts leave out: audit entries waiting on this host's disk for the database (the
    `backlog` a Store or `cds report` on the service's host adds; cds.store.spool)."""
    backlog = report.get("backlog") or {}
    if not backlog.get("spool_files"):
        return None
    return (f"Not counted yet: audit entries of this host wait in its spool for the database "
            f"({backlog['spool_files']} files, {backlog['spool_bytes']} bytes, the oldest for "
            f"{backlog['oldest_spooled_seconds']:.0f} s); the database was unavailable. Report again when "
            "they are in.")


def _not_counted_lines(report: dict) -> list[str]:
    notice = not_counted(report)
    return [notice] if notice else []


def _table(report: dict) -> str:
    lines = [
        f"pgx-cds report — calls since {report['since'] or 'the beginning'} (generated {report['generated_at']})",
        *_not_counted_lines(report),
        "",
        f"calls: {report['calls']}    cards: {report['cards']}    "
        f"genomic cards withheld by consent: {report['calls_consent_withheld']}    "
        f"calls with FHIR errors: {report['calls_with_fhir_errors']}    "
        f"calls with unresolved drugs: {report['calls_with_unresolved_drugs']}",
        f"knowledge-base versions: {', '.join(report['kb_versions']) or '-'}",
        "",
    ]
    for section in (_rule_lines, _override_lines, _not_used_lines, _screening_lines):
        lines += section(report)
    return "\n".join(lines) + "\n"


def _rule_lines(report: dict) -> list[str]:
    header = ("rule", "alerts", "accepted", "overridden", "no feedback", "accept %", "override %")
    rows = [(r["rule_id"], str(r["alerts"]), str(r["accepted"]), str(r["overridden"]), str(r["no_feedback"]),
             _percent(r["acceptance_rate"]), _percent(r["override_rate"]))
            for r in report["rules"] if r["alerts"]]
    lines = _grid(header, rows) if rows else ["no cards issued in this period"]
    versions = report.get("rule_versions") or []
    if versions:
        lines += ["", "per rule and policy version (a change judged after the fact):"]
        lines += ["  " + line for line in _grid(
            ("rule", "policy version", "alerts", "accepted", "overridden", "accept %", "override %"),
            [(r["rule_id"], "rules/ files" if r["policy_version"] is None else str(r["policy_version"]),
              str(r["alerts"]), str(r["accepted"]), str(r["overridden"]), _percent(r["acceptance_rate"]),
              _percent(r["override_rate"])) for r in versions])]
    return lines


def _override_lines(report: dict) -> list[str]:
    lines = ["", "top override reasons:"]
    lines += [f"  {r['count']:>6}  {r['display'] or r['code']}"
              + (f"  ({r['system']}|{r['code']})" if r["code"] else "") + _counterpart(r)
              for r in report["top_override_reasons"]] or ["  none"]
    if any(r["code"] for r in report.get("override_reasons_hl7", [])):
        lines += ["", "override reasons as HL7 non-adherence reasons (ours mapped where one matches):"]
        lines += [f"  {r['count']:>6}  {r['display'] or r['code']}  "
                  + (f"(HL7 {r['code']})" if r["standard"] else f"(no HL7 equivalent: {r['system']}|{r['code']})")
                  for r in report["override_reasons_hl7"] if r["code"]]
    return lines


def _not_used_lines(report: dict) -> list[str]:
    lines: list[str] = []
    if report["top_unresolved_drugs"]:
        lines += ["", f"orders we could not identify, by code/system ({report.get('unresolved_orders', 0)} orders):"]
        lines += [f"  {d['count']:>6}  {d['drug']}" for d in report["top_unresolved_drugs"]]
    if report.get("top_reasons_not_used"):
        lines += ["", f"results and orders on file that were not used ({report['calls_with_reasons']} calls):"]
        lines += [f"  {r['count']:>6}  {r['reason']}" for r in report["top_reasons_not_used"]]
    lines += ["", f"rules that never fired ({len(report['never_fired'])}):"]
    lines += [f"  {rule_id}" for rule_id in report["never_fired"]] or ["  none"]
    return lines


def _screening_lines(report: dict) -> list[str]:
    runs = report.get("screening_runs") or []
    lines = ["", f"screening runs ({len(runs)} most recent):"]
    if not runs:
        return [*lines, "  none"]
    header = ("started", "by", "patients", "actionable", "carriers", "testing", "unreadable", "withheld",
              "engine", "knowledge", "input")
    lines += ["  " + line for line in _grid(header, [
        (r["started_at"][:19], r["run_by"], str(r["patients"]), str(r["counts"].get("patients_actionable", 0)),
         str(r["counts"].get("patients_carriers", 0)), str(r["counts"].get("rows_testing", 0)),
         str(r["counts"].get("rows_unreadable", 0)), str(r["counts"].get("patients_consent_withheld", 0)),
         f"{r['engine']}×{r['workers']}", r["kb_version"][:12], r["input_digest"][:19]) for r in runs])]
    return lines


def _counterpart(reason: dict) -> str:
    if reason.get("system") == HL7_SYSTEM and reason.get("private_code"):
        return f"  = ours: {reason['private_code']}"
    if reason.get("system") != HL7_SYSTEM and reason.get("hl7_code"):
        return f"  = HL7: {reason['hl7_code']}"
    return ""


def _grid(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = enumerate(zip(row, widths, strict=True))
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in cells)

    return [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)]
