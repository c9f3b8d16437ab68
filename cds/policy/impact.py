"""What a proposed policy would change, before anyone signs it off: the proposed and the active policy
decide the same patients — the input of the most recent screening run, or a synthetic cohort — and
every card that would appear, disappear or change (indicator, summary, suggestions) is counted per drug
and rule, with examples. The workbench's impact page and `cds policy impact` both show this.

Each patient is decided as population screening decides one (cds/decision.py): one order-sign call
per active medication, the patient's Observations and DiagnosticReports as the genomics prefetch, the
Patient and Consents. Examples name a patient only by their place in the cohort.
"""
from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.decision import PatientCase, decide
from cds.knowledge.loader import KnowledgeBase
from cds.pipeline import Advisor

log = logging.getLogger(__name__)

DEFAULT_PATIENTS = 500
EXAMPLES = 3
_GENOMIC = ("Observation", "DiagnosticReport")
_ORDERS = ("MedicationRequest", "MedicationStatement")


@dataclass(frozen=True)
class CardView:
    """What a prescriber sees of one card, for comparison."""

    rule: str
    indicator: str
    summary: str
    suggestions: tuple[str, ...]
    results: str                        # the gene results it rests on, e.g. "CYP2C19 Poor Metabolizer"


@dataclass
class Change:
    drug: str
    rule: str
    kind: str                           # added | removed | changed
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Impact:
    cohort: str                         # where the patients came from
    patients: int
    orders: int                         # order-sign decisions made under each policy
    changes: list[Change]

    @property
    def total(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0}
        for change in self.changes:
            out[change.kind] += change.count
        return out

    def as_json(self) -> dict[str, Any]:
        return {"cohort": self.cohort, "patients": self.patients, "orders": self.orders, "total": self.total,
                "changes": [{"drug": c.drug, "rule": c.rule, "kind": c.kind, "count": c.count,
                             "examples": c.examples} for c in self.changes]}


def compare(active: Advisor, proposed: Advisor, cohort: Iterable[list[dict]], cohort_name: str) -> Impact:
    """Decide every patient under both policies and count the cards that differ, per drug and rule."""
    changes: dict[tuple[str, str, str], Change] = {}
    patients = orders = 0
    for number, resources in enumerate(cohort, 1):
        patients += 1
        for order in _orders(resources):
            orders += 1
            before = _cards(active, resources, order)
            after = _cards(proposed, resources, order)
            for drug in sorted(set(before) | set(after)):
                _count(changes, number, drug, before.get(drug), after.get(drug))
    ordered = sorted(changes.values(), key=lambda c: (-c.count, c.drug, c.rule, c.kind))
    return Impact(cohort_name, patients, orders, ordered)


def _count(changes: dict, number: int, drug: str, old: CardView | None, new: CardView | None) -> None:
    if old == new:
        return
    kind = "added" if old is None else "removed" if new is None else "changed"
    rule = (new or old).rule  # type: ignore[union-attr]
    change = changes.setdefault((drug, rule, kind), Change(drug, rule, kind))
    change.count += 1
    if len(change.examples) < EXAMPLES:
        change.examples.append({"patient": f"patient {number} of the cohort", "results": (new or old).results,  # type: ignore[union-attr]
                                "before": _shown(old), "after": _shown(new)})


def _shown(card: CardView | None) -> dict[str, Any] | None:
    if card is None:
        return None
    return {"rule": card.rule, "indicator": card.indicator, "summary": card.summary,
            "suggestions": list(card.suggestions)}


def _cards(advisor: Advisor, resources: list[dict], order: dict) -> dict[str, CardView]:
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    case = PatientCase(hook="order-sign", patient_ref=f"Patient/{(patient or {}).get('id', 'unknown')}",
                       patient=patient, genomics=[r for r in resources if r.get("resourceType") in _GENOMIC],
                       medications=[{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}],
                       consent=[r for r in resources if r.get("resourceType") == "Consent"])
    out = {}
    for card in decide(advisor, case).cards:
        out[card.drug] = CardView(card.rule_id, card.indicator, card.card["summary"],
                                  tuple(s.get("label", "") for s in card.card.get("suggestions", [])),
                                  "; ".join(f"{f['gene']} {f['phenotype']}" for f in card.facts))
    return out


def _orders(resources: list[dict]) -> Iterator[dict]:
    for r in resources:
        if r.get("resourceType") in _ORDERS and r.get("status") == "active":
            if r["resourceType"] == "MedicationStatement":
                r = {**{k: v for k, v in r.items() if k != "resourceType"}, "resourceType": "MedicationRequest",
                     "intent": "order"}
            yield r


# --- cohorts -------------------------------------------------------------------------------------

def synthetic_cohort(kb: KnowledgeBase, patients: int = DEFAULT_PATIENTS, seed: int = 1) -> Iterator[list[dict]]:
    """The deterministic synthetic cohort of `cds synth` (not clinical data), one patient at a time."""
    from cds.screen.synth import CohortWriter

    writer = CohortWriter(kb, seed)
    for n in range(patients):
        yield list(writer.patient(n))


def screening_input(folder: Path, patients: int = DEFAULT_PATIENTS) -> list[list[dict]]:
    """The first `patients` patients of a screening run's input folder ($export NDJSON), each with
    their resources. Lines that are not JSON or name no patient are skipped (the screening run lists them)."""
    grouped: dict[str, list[dict]] = {}
    for path in sorted(p for p in folder.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz"))):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                resource = _resource(line)
                pid = _patient_of(resource) if resource else None
                if pid is None or (pid not in grouped and len(grouped) >= patients):
                    continue
                grouped.setdefault(pid, []).append(resource)  # type: ignore[arg-type]
    return list(grouped.values())


def _resource(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _patient_of(resource: dict) -> str | None:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") if isinstance(resource.get("id"), str) else None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str) and "Patient/" in ref["reference"]:
            return ref["reference"].rsplit("Patient/", 1)[1].split("/")[0]
    return None


def latest_screening_folder(engine) -> Path | None:
    """The input folder of the most recent recorded screening run, if it is a folder this process can read."""
    from cds.store.screening import recent_runs

    try:
        with engine.connect() as conn:
            runs = recent_runs(conn, limit=1)
    except Exception:
        log.info("no screening run to take the impact cohort from", exc_info=True)
        return None
    source = runs[0].get("source") if runs else None
    if source and "://" not in source and Path(source).is_dir():
        return Path(source)
    return None


def cohort_for(kb: KnowledgeBase, engine, patients: int = DEFAULT_PATIENTS) -> tuple[str, list[list[dict]]]:
    """The most recent screening run's input when it can be read here, else the synthetic cohort."""
    folder = latest_screening_folder(engine) if engine is not None else None
    if folder is not None:
        cohort = screening_input(folder, patients)
        if cohort:
            return f"the most recent screening run's input ({folder}), first {len(cohort)} patients", cohort
    return f"a synthetic cohort of {patients} patients (cds synth, seed 1; not clinical data)", \
        list(synthetic_cohort(kb, patients))
