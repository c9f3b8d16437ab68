"""The decision pipeline, one stage after another, below every face (cds.decision drives it):

    FHIR resources → genomic results (cds.fhir) → current result per gene (cds.fhir.selection)
    → CPIC interpretation (cds.genotype) → match (cds.engine) → cards (cds.cards)

Everything here works on data already gathered; fetching it (prefetch, FHIR server) is the
service's job, so the same pipeline runs for a pasted CDS Hooks request in the workbench.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterable

from cds.cards import CardRenderer, OrderRef, RenderedCard
from cds.engine import Engine, Evaluation, withhold_conflicting
from cds.errors import CdsError
from cds.facts import GenomicResult, MedicationOrder
from cds.fhir.genomics import read_genomic_results
from cds.fhir.medications import MedicationResolver
from cds.fhir.selection import DEFAULT_STATUSES, select_current
from cds.genotype import Interpretation, allele_attribute, attribute_gene, disagree
from cds.knowledge.models import NO_RESULT
from cds.mdescape import md_data

log = logging.getLogger("cds.pipeline")


@dataclass
class PatientFacts:
    """The patient's pharmacogenomic results in CPIC terms, and what could not be used."""

    interpretations: dict[str, list[Interpretation]] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)   # gene → source ids that disagree
    notes: list[str] = field(default_factory=list)                  # skipped/ignored resources (no PHI)
    unreadable: list[str] = field(default_factory=list)             # the skipped ones alone: could not be read
    results: dict[str, GenomicResult] = field(default_factory=dict)  # source id → result (date, laboratory)
    # gene → "Observation/x: why" for results on file that could not be read or interpreted
    unreadable_by_gene: dict[str, list[str]] = field(default_factory=dict)
    # allele-status attribute ("HLA-B *57:01") → why, for unreadable results whose code names that allele
    unreadable_by_allele: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Advice:
    cards: list[RenderedCard]
    facts: PatientFacts
    orders: list[MedicationOrder] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)             # ordered products we could not read
    evaluation: Evaluation | None = None
    consent: str | None = None                                      # the consent decision's reason, if any
    decisions: list[str] = field(default_factory=list)              # why an ordered drug got no card


    def reasons(self) -> list[str]:
        """Why something on file or ordered was not used (skipped, unreadable, another patient's): audited."""
        return list(self.facts.notes) + order_notes(self.orders) + list(self.decisions)


def _interpret(engine: Engine, result: GenomicResult, problems: list[str] | None = None) -> Interpretation | None:
    interpreter = engine.kb.interpreters.get(result.gene)
    if interpreter is None:
        return None
    ids = (result.source_id,) if result.source_id else ()
    try:
        if result.diplotype:
            return interpreter.from_diplotype(result.diplotype, ids)
        if result.activity_score:
            return interpreter.from_score(result.activity_score, ids)
        if result.allele and result.allele_present is not None:
            return interpreter.from_allele_status(result.allele, result.allele_present, ids)
        if result.phenotype:
            return interpreter.from_phenotype(result.phenotype, ids)
    except CdsError as err:
        log.warning("result %s for %s not usable: %s", result.source_id, result.gene, err)
        if problems is not None:
            problems.append(f"{result.source_id or 'a result'}: {err}")
        return None
    return None


def patient_facts(engine: Engine, resources: Iterable[Any], allowed_statuses: Iterable[str] | None = None,
                  patient_ref: str | None = None) -> PatientFacts:
    """Read, select and interpret every pharmacogenomic result in `resources` (only the results of
    `patient_ref` when it is given)."""
    reading = read_genomic_results(list(resources), patient_ref=patient_ref)
    statuses = tuple(allowed_statuses) if allowed_statuses else DEFAULT_STATUSES
    current = select_current(reading.results, statuses, unreadable=reading.unreadable)
    facts = PatientFacts(conflicts=dict(current.conflicts), notes=reading.skipped + current.ignored,
                         unreadable=list(reading.skipped))
    for item in reading.unreadable:
        if item.gene:
            facts.unreadable_by_gene.setdefault(item.gene, []).append(item.reason)
            if item.allele:
                facts.unreadable_by_allele.setdefault(allele_attribute(item.gene, item.allele), []).append(item.reason)
    for gene, older in current.superseded_by_unreadable.items():
        # the card that says the newer result could not be read names the older ones it replaced
        facts.unreadable_by_gene.setdefault(gene, []).extend(older)
    for gene, results in current.by_gene.items():
        facts.results.update({r.source_id: r for r in results if r.source_id})
        if gene not in engine.kb.interpreters:
            facts.notes.extend(f"{r.source_id or 'a result'} ({gene}): no {gene} gene table in the knowledge base; "
                               "not interpreted" for r in results)
            continue
        problems: list[str] = []
        interpretations = [i for i in (_interpret(engine, r, problems) for r in results) if i is not None]
        for i in interpretations:
            if i.indeterminate and i.reason:      # e.g. an allele the CPIC table does not know
                problems.append(f"{', '.join(i.source_ids) or 'a result'}: {i.reason}")
        if problems:
            facts.unreadable_by_gene.setdefault(gene, []).extend(problems)
            facts.notes.extend(problems)
        if not interpretations:
            continue
        if disagree(interpretations):
            # e.g. a genotype of *1/*1 beside a reported "Poor Metabolizer": the lab contradicts itself
            facts.conflicts[gene] = sorted({s for i in interpretations for s in i.source_ids} or {"(no id)"})
            continue
        facts.interpretations[gene] = interpretations
    return facts


def age_on(birth_date: object, today: date | None = None) -> int | None:
    if not isinstance(birth_date, str) or len(birth_date) < 4:
        return None
    try:
        year, month, day = (birth_date.split("-") + ["1", "1"])[:3]
        born = date(int(year), int(month), int(day))
    except ValueError:
        return None
    today = today or date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


class Advisor:
    """The stages, built once at start-up and shared by every request."""

    def __init__(self, engine: Engine, renderer: CardRenderer, resolver: MedicationResolver):
        self.engine = engine
        self.kb = engine.kb
        self.renderer = renderer
        self.resolver = resolver

    @classmethod
    def build(cls, engine: Engine) -> "Advisor":
        ingredients = {d.name.lower(): d.rxnorm for gs in engine.kb.drugs().values() for g in gs
                       for d in g.drugs if d.rxnorm}
        # Orders are read from their JSON; validating each against fhir.resources only adds a log line
        # (0.15 ms per order on the request path), so it is left to the genomic reader's skip reasons.
        return cls(engine, CardRenderer(engine.kb, engine), MedicationResolver(ingredients, validate=False))

    def drugs_of(self, orders: list[MedicationOrder]) -> tuple[list[str], dict[str, OrderRef], list[str]]:
        """Knowledge-base drugs of the orders, the order each came from, and unresolved products."""
        drugs: list[str] = []
        refs: dict[str, OrderRef] = {}
        unresolved: list[str] = []
        for order in orders:
            if order.resolution == "not-this-patient":
                continue          # another patient's order: not used (order_notes says so in the audit)
            if order.unresolved or not order.ingredients:
                unresolved.append(unresolved_entry(order))
                continue
            for ingredient in order.ingredients:
                plan = self.engine.drug_plan(ingredient.rxnorm) or self.engine.drug_plan(ingredient.name)
                if plan is None:
                    continue  # an ingredient no pharmacogenomic guideline covers: nothing to say
                if plan.drug not in refs:
                    drugs.append(plan.drug)
                    refs[plan.drug] = OrderRef(order.order_id, order.resource)
        return drugs, refs, unresolved

    def genes_of(self, drug: str) -> set[str]:
        plan = self.engine.drug_plan(drug)
        return set(plan.attributes.values()) if plan else set()

    def advise_orders(self, hook: str, facts: PatientFacts, orders: list[MedicationOrder],
                      patient_ref: str | None = None, age: int | None = None,
                      population: str | None = None, app_url: str | None = None) -> Advice:
        drugs, refs, unresolved = self.drugs_of(orders)
        evaluation = self.engine.evaluate(facts.interpretations, drugs, population, conflicts=facts.conflicts)
        uninterpretable = uninterpretable_genes(facts, evaluation)
        if uninterpretable:
            # not "no result on file — test first": a result is on file, we could not read it
            withhold_conflicting(evaluation, uninterpretable)
        by_allele = withhold_unreadable_alleles(facts, evaluation, uninterpretable)
        cards = self.renderer.order_cards(evaluation, hook, refs, patient_ref, population, age, facts.results, app_url)
        cards += self.conflict_cards(hook, evaluation)
        cards += self.uninterpretable_cards(hook, evaluation, uninterpretable)
        for drug, genes in by_allele.items():
            cards += self.uninterpretable_cards(hook, evaluation, genes, only_drug=drug)
        cards += self.unidentified_cards(hook, orders)
        advice = Advice(cards, facts, orders, unresolved, evaluation)
        advice.decisions = no_card_reasons(hook, evaluation, cards)
        return advice

    def uninterpretable_cards(self, hook: str, evaluation: Evaluation, genes: dict[str, list[str]],
                              only_drug: str | None = None) -> list[RenderedCard]:
        """A card per ordered drug (governed on this hook; `only_drug`: that one alone) that depends on a
        gene whose result on file could not be read or interpreted, naming the result and why."""
        if not genes:
            return []
        cards = []
        for drug in evaluation.drugs:
            if hook not in drug.rules or only_drug not in (None, drug.drug):
                continue
            mine = sorted(self.genes_of(drug.drug) & set(genes))
            if not mine:
                continue
            names = ", ".join(mine)
            cards.append(self.renderer.notice_card(
                drug.drug, f"{drug.drug.capitalize()}: {names} result on file could not be interpreted — review it "
                           "before prescribing",
                f"A {names} result is on file for this patient but could not be interpreted, so no genotype-based "
                f"advice is given and no new test is suggested. Results involved: "
                + "; ".join(md_data(r) for g in mine for r in genes[g])
                + ". Review the result or ask the laboratory before prescribing.", "result-not-interpretable"))
        return cards

    def unidentified_cards(self, hook: str, orders: list[MedicationOrder]) -> list[RenderedCard]:
        """A card for an order we could not identify only when it may be a drug the knowledge base covers
        on this hook: its codes or names disagree and one of them names such a drug (clopidogrel and
        simvastatin codes on one order). Other unidentified orders (an RxNorm product not in the table,
        SNOMED CT) are audited and counted, not carded: most are drugs without pharmacogenomic advice,
        and a card on each would teach clinicians to ignore the cards that matter."""
        cards = []
        for order in orders:
            if not order.unresolved or not order.candidates:
                continue
            governed = []
            for ingredient in order.candidates:
                plan = self.engine.drug_plan(ingredient.rxnorm) or self.engine.drug_plan(ingredient.name)
                if plan is not None and hook in plan.rules and plan.drug not in governed:
                    governed.append(plan.drug)
            if not governed:
                continue
            named = " and ".join(i.name for i in order.candidates)
            shown = order.display or ", ".join(order.codes) or (order.order_id or "an order")
            cards.append(self.renderer.notice_card(
                governed[0], f"Order could not be identified: its codes name {named} — pharmacogenomic check not done",
                f"The order \"{shown}\" ({', '.join(order.codes) or 'no code'}) names different drugs ({named}), so it "
                "was not matched to either and no genotype-based advice was given. Check which drug is meant; "
                "the pharmacogenomic check runs when the order names one.", "order-not-identified"))
        return cards

    def conflict_cards(self, hook: str, evaluation: Evaluation) -> list[RenderedCard]:
        """Say a conflict, never let it pass silently: per ordered drug governed on this hook whose
        genes include a conflicting one (order hooks), or one card for the patient (patient-view).
        Shared by the service and the workbench's typed results."""
        conflicts = evaluation.conflicts
        if not conflicts:
            return []
        if hook == "patient-view":
            genes = ", ".join(sorted(conflicts))
            return [self.renderer.notice_card(
                "", f"Conflicting pharmacogenomic results on file: {genes}",
                "Current results for these genes disagree; no genotype-based advice is given for them until the "
                "laboratory confirms one. Results involved: "
                + ", ".join(md_data(s) for ids in conflicts.values() for s in ids), "conflicting-results")]
        cards = []
        for drug in evaluation.drugs:
            conflicting = sorted(self.genes_of(drug.drug) & set(conflicts))
            if conflicting and hook in drug.rules:
                cards.append(self.renderer.notice_card(
                    drug.drug, f"{drug.drug.capitalize()}: conflicting {', '.join(conflicting)} results on file — "
                               "pharmacogenomic check not possible",
                    "Two current results for the same gene disagree, so no genotype-based advice is given for it. "
                    "Results involved: " + ", ".join(md_data(s) for g in conflicting for s in conflicts[g]) +
                    ". Ask the laboratory to confirm the result.", "conflicting-results"))
        return cards

    def check_not_possible(self, hook: str, orders: list[MedicationOrder], reason: str) -> list[RenderedCard]:
        """Cards saying the check could not be completed (FHIR server down), for the drugs it concerns."""
        drugs, _, _ = self.drugs_of(orders)
        cards = []
        for drug in drugs:
            plan = self.engine.drug_plan(drug)
            if plan and hook in plan.rules:
                cards.append(self.renderer.notice_card(
                    drug, f"{drug.capitalize()}: pharmacogenomic check could not be completed",
                    f"The patient's pharmacogenomic results could not be retrieved ({md_data(reason)}). "
                    "No genotype-based advice was given; check the results before prescribing.", "check-incomplete",
                    indicator="warning"))
        return cards

    def summarise_patient(self, facts: PatientFacts, active_orders: list[MedicationOrder],
                          app_url: str | None = None) -> Advice:
        drugs, _, unresolved = self.drugs_of(active_orders)
        evaluation = self.engine.evaluate(facts.interpretations, drugs, conflicts=facts.conflicts)
        cards = self.renderer.patient_summary(facts.interpretations, evaluation, evidence=facts.results, app_url=app_url)
        cards += self.conflict_cards("patient-view", evaluation)
        uninterpretable = uninterpretable_genes(facts, evaluation)
        for attribute, reasons in facts.unreadable_by_allele.items():
            gene = attribute_gene(attribute)   # an allele no readable result of its gene states
            if gene not in uninterpretable and gene not in facts.conflicts and not any(
                    attribute in i.lookup for i in facts.interpretations.get(gene, [])):
                uninterpretable.setdefault(gene, []).extend(reasons)
        if uninterpretable:
            cards.append(self.renderer.notice_card(
                "", f"Pharmacogenomic results on file could not be interpreted: {', '.join(sorted(uninterpretable))}",
                "These results are on file but could not be read or interpreted, so no advice rests on them. "
                "Results involved: " + "; ".join(md_data(r) for rs in uninterpretable.values() for r in rs)
                + ". Review them or ask the laboratory.", "result-not-interpretable"))
        return Advice(cards, facts, active_orders, unresolved, evaluation)

def unresolved_entry(order: MedicationOrder) -> str:
    """How an order we could not identify is counted in the audit and `cds report`: by what was ordered
    (code and system, or the text alone) and why it stayed unresolved. No patient data: codes and names."""
    what = ", ".join(order.codes) or "no code"
    shown = f" \"{order.display}\"" if order.display and f"text:{order.display}" not in order.codes else ""
    return f"{what}{shown} ({order.resolution or 'not-resolved'})"


def no_card_reasons(hook: str, evaluation: Evaluation, cards: list[RenderedCard]) -> list[str]:
    """For each ordered knowledge-base drug that got no card, why (audited, so an order never leaves
    in silence): no rule governs it on this hook, its recommendation raises no card under the local
    policy ("use as usual"), or no result on file for its genes (and no pre-test rule)."""
    carded = {c.drug for c in cards}
    out = []
    for drug in evaluation.drugs:
        if drug.drug in carded:
            continue
        missing = sorted({g for g, v in drug.facts.items() if v == NO_RESULT})
        if hook not in drug.rules:
            why = f"no local rule governs it on {hook}"
        elif drug.matches:
            keys = sorted({m.recommendation.classification or "unclassified" for m in drug.matches})
            sources = " and ".join(sorted({m.guideline.source for m in drug.matches}))  # CPIC, DPWG (cds/sources.py)
            why = f"{sources} recommendation matched ({', '.join(keys)}), no card under the local policy"
        elif missing:
            why = f"no {', '.join(missing)} result on file and no pre-test rule for it"
        else:
            why = "no CPIC recommendation matches the results on file"
        out.append(f"{drug.drug}: no card — {why}")
    return out


def order_notes(orders: list[MedicationOrder]) -> list[str]:
    """Audit reasons for orders that were read but not used."""
    return [f"{o.order_id or 'an order'}: its subject is not the patient of this request; not used"
            for o in orders if o.resolution == "not-this-patient"]


def withhold_unreadable_alleles(facts: PatientFacts, evaluation: Evaluation,
                                uninterpretable: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """An allele-status result on file that could not be read, for an allele no readable result states
    (HLA-B*57:01 unreadable beside a readable HLA-B*15:02): the drugs resting on that allele get neither
    its "no result — test first" alert nor its no-result advice, since a result is on file. Returns
    drug → {gene: why} for the "could not be interpreted" card of each such drug."""
    out: dict[str, dict[str, list[str]]] = {}
    for drug in evaluation.drugs:
        for attribute, reasons in facts.unreadable_by_allele.items():
            if drug.facts.get(attribute) != NO_RESULT:
                continue      # not this drug's allele, or a readable result states it
            gene = attribute_gene(attribute)
            if gene in uninterpretable or gene in facts.conflicts or gene in evaluation.conflicts:
                continue      # already said for the whole gene
            drug.pretests = [p for p in drug.pretests if p.gene != gene]
            drug.matches = [m for m in drug.matches if m.recommendation.lookup.get(attribute) != NO_RESULT]
            out.setdefault(drug.drug, {}).setdefault(gene, []).extend(reasons)
    return out


def uninterpretable_genes(facts: PatientFacts, evaluation: Evaluation) -> dict[str, list[str]]:
    """Genes with a result on file that could not be read or interpreted and no usable result beside it
    (an Indeterminate interpretation is not a usable result), minus genes already in conflict."""
    out = {}
    for gene, reasons in facts.unreadable_by_gene.items():
        if gene in facts.conflicts or gene in evaluation.conflicts:
            continue
        if any(not i.indeterminate for i in facts.interpretations.get(gene, [])):
            continue
        out[gene] = reasons
    return out

