"""The dose card of a drug with a dosing algorithm (warfarin: CPIC's recommendation, the IWPC estimate),
decided inside the decision core for every face.

When: the drug is ordered on an order hook, a local rule governs it there and selects CPIC, and the patient
has a result for at least one gene the algorithm reads (without any, CPIC gives no genotype-guided dose and
there is nothing to say beyond the usual; the audit records why). Then the card always comes: with the
estimate, or naming every missing input and giving the flow chart's text instead of a number.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from cds.dosing.calculate import DoseDecision, InputValue, decide_dose
from cds.dosing.card import dose_card
from cds.dosing.inputs import ClinicalData, genotype_inputs, read_inputs
from cds.sources import rule_sources

if TYPE_CHECKING:
    from cds.cards import RenderedCard
    from cds.facts import MedicationOrder
    from cds.pipeline import Advisor, PatientFacts


@dataclass
class DoseRequest:
    """What the dose card of one drug rests on."""

    drug: str
    hook: str
    facts: PatientFacts
    clinical: ClinicalData
    today: date


def dose_cards(advisor: Advisor, hook: str, facts: PatientFacts, orders: list[MedicationOrder],
               clinical: ClinicalData, today: date | None = None) -> tuple[list[RenderedCard], list[str]]:
    """Dose cards for the ordered drugs that have a dosing algorithm, and audit reasons for those that got none."""
    cards, reasons = [], []
    drugs, _, _ = advisor.drugs_of(orders)
    for drug in drugs:
        algorithm = advisor.kb.dosing.get(drug)
        if algorithm is None:
            continue
        why_not = _not_on_this_hook(advisor, drug, hook)
        read = [t.input for t in algorithm.categorical if t.input in advisor.kb.genes]   # CYP2C9, VKORC1
        if why_not is None and not _has_a_result(read, facts):
            why_not = f"no {' or '.join(read)} result on file"
        if why_not:
            reasons.append(f"{drug}: no genotype-guided dose card — {why_not}")
            continue
        decision = dose_decision(advisor, DoseRequest(drug, hook, facts, clinical, today or date.today()))
        plan = advisor.engine.drug_plan(drug)
        cards.append(dose_card(advisor.kb, decision, plan.rules[hook] if plan else None))
    return cards, reasons


def dose_decision(advisor: Advisor, request: DoseRequest) -> DoseDecision:
    algorithm = advisor.kb.dosing[request.drug]
    clinical_inputs, age = read_inputs(algorithm, request.clinical, request.today)
    genotypes, genes = genotype_inputs(algorithm, request.facts.interpretations, request.facts.unreadable_by_gene)
    conflicts = [g for g in algorithm.genes if g in request.facts.conflicts]
    inputs = clinical_inputs + [_conflicted(i.name, request.facts) if i.name in conflicts else i for i in genotypes]
    return decide_dose(algorithm, inputs, genes, age)


def _conflicted(gene: str, facts: PatientFacts) -> InputValue:
    why = f"the {gene} results on file disagree ({', '.join(facts.conflicts[gene])})"
    return InputValue(gene, None, why, missing=why)


def _not_on_this_hook(advisor: Advisor, drug: str, hook: str) -> str | None:
    plan = advisor.engine.drug_plan(drug)
    rule = plan.rules.get(hook) if plan else None
    if rule is None:
        return f"no local rule governs it on {hook}"
    if "CPIC" not in rule_sources(advisor.kb, rule):
        return f"rule {rule.id} does not select CPIC, whose recommendation the dose is"
    return None


def _has_a_result(genes: Sequence[str], facts: PatientFacts) -> bool:
    return any(g in facts.interpretations or g in facts.unreadable_by_gene or g in facts.conflicts for g in genes)


def clinical_data(patient_ref: str, patient: dict[str, Any] | None, vitals: list[Any] | None,
                  active: list[MedicationOrder] | None, drafts: list[MedicationOrder],
                  problems: dict[str, str]) -> ClinicalData:
    """The clinical data of one case: the active medications together with the orders being placed (an
    amiodarone order signed with the warfarin counts)."""
    medications = None if active is None else [*active, *[o for o in drafts if o not in active]]
    return ClinicalData(patient_ref, patient, vitals, medications, problems)


def dosing_keys_not_needed(advisor: Advisor, request: Any) -> tuple[str, ...]:
    """The clinical-input prefetch keys a hook call need not fetch from fhirServer: all of them unless an
    ordered drug has a dosing algorithm (so a clopidogrel order costs no vital-sign search)."""
    from cds.cdshooks import ACTIVE_MEDICATION_KEYS, VITALS_KEY, selected_orders

    keys = (VITALS_KEY, *ACTIVE_MEDICATION_KEYS)
    if request.hook not in ("order-select", "order-sign", "medication-prescribe"):
        return keys
    orders = advisor.resolver.read_orders(selected_orders(request), patient_ref=request.patient_ref)
    drugs, _, _ = advisor.drugs_of(orders)
    return () if any(d in advisor.kb.dosing for d in drugs) else keys


def stated_dose(kb: Any, drug: str, interpretations: dict[str, list[Any]], age: int | None, height_cm: float | None,
                weight_kg: float | None, race: str | None, medications: list[str] | None) -> DoseDecision | None:
    """The dose for stated genotypes and clinical inputs (`cds explain`, the workbench), or None when the
    drug has no dosing algorithm."""
    from cds.dosing.inputs import stated_inputs

    algorithm = kb.dosing.get(drug)
    if algorithm is None:
        return None
    clinical, years = stated_inputs(age, height_cm, weight_kg, race, medications)
    genotypes, genes = genotype_inputs(algorithm, interpretations, {})
    return decide_dose(algorithm, clinical + genotypes, genes, years)


def stated_dose_cards(advisor: Advisor, evaluation: Any, hook: str, age: int | None, height_cm: float | None,
                      weight_kg: float | None, race: str | None,
                      medications: list[str] | None) -> list[RenderedCard]:
    """Dose cards for typed results and stated clinical inputs (the workbench's try-a-patient), under the same
    conditions as a hook call: an ordered drug with a dosing algorithm, governed on this hook by a rule that
    selects CPIC, and a result on file for a gene the algorithm reads."""
    from cds.pipeline import PatientFacts

    facts = PatientFacts(interpretations=evaluation.interpretations, conflicts=dict(evaluation.conflicts))
    cards = []
    for drug in (d.drug for d in evaluation.drugs):
        algorithm = advisor.kb.dosing.get(drug)
        read = [t.input for t in algorithm.categorical if t.input in advisor.kb.genes] if algorithm else []
        if algorithm is None or _not_on_this_hook(advisor, drug, hook) or not _has_a_result(read, facts):
            continue
        decision = stated_dose(advisor.kb, drug, evaluation.interpretations, age, height_cm, weight_kg, race,
                               medications)
        plan = advisor.engine.drug_plan(drug)
        if decision is not None:
            cards.append(dose_card(advisor.kb, decision, plan.rules.get(hook) if plan else None))
    return cards
