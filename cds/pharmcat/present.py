"""PharmCAT's calls as plain data for the faces (JSON of `cds explain`, the workbench, the SMART page)."""
from __future__ import annotations

from typing import Any

from cds.pharmcat.model import PharmcatResults


def calls_json(results: PharmcatResults) -> list[dict[str, Any]]:
    """Per gene: how PharmCAT called it, in PharmCAT's words."""
    out = []
    for call in results.calls:
        first = call.diplotypes[0] if call.diplotypes else None
        out.append({
            "gene": call.gene,
            "call_source": call.call_source,
            "status": call.status,
            "diplotype": call.diplotype,
            "phenotypes": list(first.phenotypes) if first and len(call.diplotypes) == 1 else [],
            "activity_score": first.activity_score if first and len(call.diplotypes) == 1 else None,
            "reason": call.reason,
            "messages": list(call.messages),
        })
    return out


def results_json(results: PharmcatResults, notes: list[str]) -> dict[str, Any]:
    return {"kind": results.kind, "method": results.method, "pharmcat_version": results.pharmcat_version,
            "data_version": results.data_version, "timestamp": results.timestamp,
            "calls": calls_json(results), "notes": list(notes)}
