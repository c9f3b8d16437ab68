"""The decision core: one patient's FHIR resources in, cards and the reasons for what could not be
decided out. Every face calls exactly this: the CDS Hooks service, the workbench's "try a patient",
and population screening, so no two of them can drift apart.

A face gathers the data its own way (prefetch and FHIR fetch, a pasted request, Bulk Data NDJSON) and
describes it as a PatientCase; `decide` does the rest: consent, orders, genomic results, engine, cards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds.consent import genomic_consent
from cds.dosing.advice import clinical_data, dose_cards
from cds.pipeline import Advice, Advisor, PatientFacts, age_on, patient_facts

ORDER_HOOKS = ("order-select", "order-sign")


@dataclass
class PatientCase:
    """What one decision rests on, however it was gathered."""

    hook: str                                   # order-select | order-sign | patient-view
    patient_ref: str                            # "Patient/123"
    patient: dict[str, Any] | None = None       # the Patient resource, for age
    genomics: list[Any] = field(default_factory=list)      # Observations, DiagnosticReports, Bundles
    medications: list[Any] = field(default_factory=list)   # draft orders (order hooks) or active medications
    consent: list[Any] | None = None            # Consent resources; None when consent was not gathered
    errors: dict[str, str] = field(default_factory=dict)   # data that could not be gathered → why
    # The results of `genomics` already read (patient_facts): a face that decides one patient for
    # several orders (screening: one order-sign per active drug) reads them once. None: read here.
    facts: PatientFacts | None = None
    app_url: str | None = None                  # the SMART summary page cards link to (None: no link)
    # Clinical inputs of dosing algorithms (cds/dosing): vital-sign Observations (height, weight) and the
    # patient's active MedicationRequests/MedicationStatements. None: not gathered (named as missing).
    vitals: list[Any] | None = None
    active_medications: list[Any] | None = None
    today: date | None = None                   # the day the doses are for (None: today)


def decide(advisor: Advisor, case: PatientCase, require_consent: bool = False) -> Advice:
    """The advice for one case. `require_consent`: use genomic data only under an active permitting
    Consent (the site's setting), else only an active denying Consent withholds it."""
    consent = None
    if case.consent is not None or require_consent:
        decision = genomic_consent(case.consent or [], case.patient_ref, require_consent)
        consent = decision.reason
        if not decision.allowed:
            # The patient's (or the site's) decision: no genotype-based advice at all, and no pre-test
            # alert either, since results may exist that we may not use.
            return Advice([], PatientFacts(), consent=consent)
    orders = advisor.resolver.read_orders(case.medications, patient_ref=case.patient_ref)
    if case.hook == "patient-view":
        if "genomics" in case.errors:
            cards = [advisor.renderer.notices.summary_not_possible(case.errors["genomics"])]
            return Advice(cards, PatientFacts(), orders, consent=consent)
        facts = case.facts if case.facts is not None else patient_facts(advisor.engine, case.genomics,
                                                                         patient_ref=case.patient_ref,
                                                                         reader=advisor.reader)
        advice = advisor.summarise_patient(facts, orders, case.app_url)
    elif case.hook in ORDER_HOOKS:
        if "genomics" in case.errors:
            cards = advisor.check_not_possible(case.hook, orders, case.errors["genomics"])
            return Advice(cards, PatientFacts(), orders, advisor.drugs_of(orders)[2], consent=consent)
        age = age_on(case.patient.get("birthDate")) if case.patient else None
        facts = case.facts if case.facts is not None else patient_facts(advisor.engine, case.genomics,
                                                                         patient_ref=case.patient_ref,
                                                                         reader=advisor.reader)
        advice = advisor.advise_orders(case.hook, facts, orders, case.patient_ref, age, app_url=case.app_url)
        add_dose_cards(advisor, case, advice, orders)
    else:
        raise ValueError(f"no decision for hook {case.hook!r}")
    advice.consent = consent
    return advice


def add_dose_cards(advisor: Advisor, case: PatientCase, advice: Advice, orders: list) -> None:
    """The dose card of an ordered drug with a dosing algorithm (warfarin), or the audited reason for none."""
    if not any(d in advisor.kb.dosing for d in advisor.drugs_of(orders)[0]):
        return
    active = None
    if case.active_medications is not None:
        active = advisor.resolver.read_orders(_as_requests(case.active_medications), patient_ref=case.patient_ref)
    problems = {k: v for k, v in case.errors.items() if k in ("patient", "vitals", "medications")}
    clinical = clinical_data(case.patient_ref, case.patient, case.vitals, active, orders, problems)
    cards, reasons = dose_cards(advisor, case.hook, advice.facts, orders, clinical, case.today)
    advice.cards += cards
    advice.decisions = [d for d in advice.decisions if d.split(": no card", 1)[0] not in {c.drug for c in cards}]
    advice.decisions += reasons


def _as_requests(resources: list[Any]) -> list[Any]:
    """MedicationStatements read as the orders they record (same medication[x] and subject), so one reader
    resolves both."""
    out: list[Any] = []
    for item in resources:
        if isinstance(item, dict) and item.get("resourceType") == "Bundle":
            out.append({**item, "entry": [{**e, "resource": _statement_as_request(e.get("resource"))}
                                          for e in item.get("entry") or [] if isinstance(e, dict)]})
        else:
            out.append(_statement_as_request(item))
    return out


def _statement_as_request(resource: Any) -> Any:
    if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationStatement":
        return resource
    return {**resource, "resourceType": "MedicationRequest"}

