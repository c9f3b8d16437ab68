"""What the service hands the store about one CDS call, and the de-identified form that is kept.

`CallRecord` carries the raw patient id because only the store knows the key that hashes it;
`audit_entry` turns it into the JSON-safe dict that goes to the database or the spool, with the id
hashed and every free-text field scrubbed of it. Nothing else in this package sees the raw id.
"""
from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cds.ids import new_uuid
from cds.store.pseudonym import normalised_patient_id

ENTRY_VERSION = 1              # bump when the entry layout changes; replay reads every version it knows
PATIENT_PLACEHOLDER = "[patient]"


@dataclass(frozen=True)
class CardRecord:
    uuid: str                  # card.uuid as sent to the EHR; feedback refers to it
    rule_id: str
    guideline_id: str | None
    guideline_version: str | None
    indicator: str             # info | warning | critical
    summary: str
    source: str | None = None  # guideline source(s) the card rests on: CPIC, DPWG or CPIC+DPWG


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
    time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    call_id: str = field(default_factory=new_uuid)   # one getrandom() per call cost more than the rest of the record


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def scrubber(patient_id: str | None) -> Callable[[str | None], str | None]:
    """Replace the raw patient id wherever it appears in free text or ids, except inside a longer word.
    The id is normalised first: for `Patient/X` the bare `X` goes too (and with it `Patient/X`)."""
    if not patient_id:
        return lambda text: text
    patient_id = normalised_patient_id(patient_id)
    if not patient_id:
        return lambda text: text
    width = len(patient_id)

    def scrub(text: str | None) -> str | None:
        if not text or patient_id not in text:  # the usual case
            return text
        # Not next to a letter or digit: "19" in "CYP2C19" is not the patient, but "pat1" in
        # "Observation/pat1-cyp" is (servers build resource ids from patient ids). A scan, not a regex:
        # a screening run scrubs for 100k different ids, and compiling a pattern for each was 2% of it.
        parts, kept, at = [], 0, text.find(patient_id)
        while at >= 0:
            end = at + width
            if (at == 0 or text[at - 1] not in _WORD) and (end == len(text) or text[end] not in _WORD):
                parts += (text[kept:at], PATIENT_PLACEHOLDER)
                kept = end
                at = text.find(patient_id, end)
            else:
                at = text.find(patient_id, at + 1)
        parts.append(text[kept:])
        return "".join(parts)

    return scrub


_WORD = frozenset(string.ascii_letters + string.digits)   # ASCII only, as the rule has always been


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
             "guideline_version": c.guideline_version, "source": c.source, "indicator": c.indicator,
             "summary": scrub(c.summary)}
            for c in record.cards
        ],
        "facts": [
            {"gene": f.gene, "phenotype": f.phenotype, "lookup_key": scrub(f.lookup_key),
             "source_ids": [scrub(s) for s in f.source_ids]}
            for f in record.facts
        ],
    }
