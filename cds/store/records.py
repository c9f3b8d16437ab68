"""What the service hands the store about one CDS call, and the de-identified form that is kept.

`CallRecord` carries the raw patient id because only the store knows the key that hashes it;
`audit_entry` turns it into the JSON-safe dict that goes to the database or the spool, with the id
hashed and every free-text field scrubbed of it. Nothing else in this package sees the raw id.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cds.ids import new_uuid
from cds.patient_ids import PATIENT_PLACEHOLDER, scrubber  # noqa: F401 - where the store always had them

ENTRY_VERSION = 1              # bump when the entry layout changes; replay reads every version it knows


@dataclass(frozen=True)
class CardRecord:
    uuid: str                  # card.uuid as sent to the EHR; feedback refers to it
    rule_id: str
    guideline_id: str | None
    guideline_version: str | None
    indicator: str             # info | warning | critical
    summary: str
    source: str | None = None  # guideline source(s) the card rests on: CPIC, DPWG or CPIC+DPWG
    policy_version: int | None = None  # the local policy version that worded it (None: rules/ files)


@dataclass(frozen=True)
class FactRecord:
    gene: str
    phenotype: str | None
    lookup_key: str | None     # the key the recommendation was found under (phenotype, activity score…)
    source_ids: list[str] = field(default_factory=list)  # "Observation/abc"


@dataclass(frozen=True)
class CallRecord:
    service_id: str
    hook: str
    hook_instance: str | None
    patient_id: str | None     # raw; hashed before it touches disk
    kb_version: str            # content hash of the compiled knowledge base
    cards: list[CardRecord] = field(default_factory=list)
    facts: list[FactRecord] = field(default_factory=list)
    unresolved_drugs: list[str] = field(default_factory=list)
    fhir_errors: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)   # results/orders on file that were not used, and why
    consent: str | None = None  # cds.consent reason code, None when consent was not consulted
    latency_ms: float | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    call_id: str = field(default_factory=new_uuid)   # one getrandom() per call cost more than the rest of the record


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


patient_scrubber = scrubber   # for other writers of de-identified text (screening outputs)


def audit_entry(record: CallRecord, hash_patient: Callable[[str], str]) -> dict:
    """The de-identified, JSON-safe form of a call, as written to the database and to the spool."""
    scrub = scrubber(record.patient_id)
    return {
        "kind": "call",
        "v": ENTRY_VERSION,
        "call_id": str(record.call_id),
        "time": utc(record.time).isoformat(),
        "service_id": record.service_id,
        "hook": record.hook,
        "hook_instance": record.hook_instance,
        "patient_hash": hash_patient(record.patient_id) if record.patient_id else None,
        "kb_version": record.kb_version,
        "consent": record.consent,
        "latency_ms": record.latency_ms,
        "unresolved_drugs": [scrub(d) for d in record.unresolved_drugs],
        "fhir_errors": [scrub(e) for e in record.fhir_errors],
        "reasons": [scrub(r) for r in record.reasons],
        "cards": [
            {"uuid": str(c.uuid), "rule_id": c.rule_id, "guideline_id": c.guideline_id,
             "guideline_version": c.guideline_version, "source": c.source, "policy_version": c.policy_version,
             "indicator": c.indicator,
             "summary": scrub(c.summary)}
            for c in record.cards
        ],
        "facts": [
            {"gene": f.gene, "phenotype": f.phenotype, "lookup_key": scrub(f.lookup_key),
             "source_ids": [scrub(s) for s in f.source_ids]}
            for f in record.facts
        ],
    }
