"""A policy's history as data and as text: every version with author, approver, reasons, times, the
events that happened to it and the diff to its predecessor (the version it was proposed against)."""
from __future__ import annotations

from typing import Any

from cds.policy.store import ACTIVATE, PolicyVersion, diff


def history_json(items: list[PolicyVersion], active: int | None) -> dict[str, Any]:
    by_number = {v.version: v for v in items}
    versions = []
    for v in items:
        decided = v.event("approve") or v.event("reject")
        activation = v.event(ACTIVATE)
        previous = by_number.get(v.base_version) if v.base_version is not None else None
        versions.append({
            "version": v.version, "status": v.status, "active": v.version == active,
            "author": v.author, "reason": v.reason, "proposed_at": v.proposed_at.isoformat(),
            "base_version": v.base_version,
            "decided_by": decided.actor if decided else None,
            "decision": decided.action if decided else None,
            "decision_comment": decided.comment if decided else None,
            "decided_at": decided.at.isoformat() if decided else None,
            "effective_at": activation.effective_at.isoformat() if activation and activation.effective_at else None,
            "events": [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "comment": e.comment,
                        "effective_at": e.effective_at.isoformat() if e.effective_at else None} for e in v.events],
            "files": sorted(v.files),
            "diff": diff(previous.files, v.files) if previous else "",
        })
    return {"active_version": active, "versions": versions}


def history_text(data: dict[str, Any]) -> str:
    lines = [f"active version: {data['active_version']}", ""]
    for v in data["versions"]:
        mark = " (active)" if v["active"] else ""
        lines.append(f"version {v['version']}{mark}: {v['status']}, proposed by {v['author']} at {v['proposed_at']}"
                     + (f" against version {v['base_version']}" if v["base_version"] else ""))
        lines.append(f"  reason: {v['reason']}")
        for e in v["events"]:
            if e["action"] == "propose":
                continue
            extra = f" (from {e['effective_at']})" if e["action"] == ACTIVATE and e["effective_at"] else ""
            said = f": {e['comment']}" if e["comment"] else ""
            lines.append(f"  {e['at']}  {e['action']} by {e['actor']}{extra}{said}")
        if v["diff"]:
            lines += ["  " + line for line in v["diff"].splitlines()]
        lines.append("")
    return "\n".join(lines)
