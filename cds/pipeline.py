"""The decision pipeline, one stage after another, below every face (cds.decision drives it):

    FHIR resources → genomic results (cds.fhir) → current result per gene (cds.fhir.selection)
    → CPIC interpretation (cds.genotype) → match (cds.engine) → cards (cds.cards)

Everything here works on data already gathered; fetching it (prefetch, FHIR server) is the
service's job, so the same pipeline runs for a pasted CDS Hooks request in the workbench.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds.cards import CardRenderer, OrderRef, RenderedCard
from cds.engine import STATED_ORDER, Engine, Evaluation, withhold_conflicting
from cds.errors import CdsError
from cds.facts import GenomicResult, MedicationOrder
from cds.fhir.genomics import GenomicReader, Unreadable
from cds.fhir.mappings import default_mappings
from cds.fhir.medications import MedicationResolver
from cds.fhir.selection import DEFAULT_STATUSES, select_current
from cds.genotype import Interpretation, allele_attribute, attribute_gene, disagree
from cds.knowledge.models import NO_RESULT

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
    # drug → why, for unreadable results whose gene could not be told but that assess that drug (a
    # therapeutic implication naming its medication, derived from a genotype that is not here)
    unreadable_by_drug: dict[str, list[str]] = field(default_factory=dict)


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
        if result.phenotype and result.reason:   # its source says why it is Indeterminate: keep the why
            return interpreter.indeterminate(result.reason, result.text, ids)
        if result.phenotype:
            return interpreter.from_phenotype(result.phenotype, ids)
    except CdsError as err:
        log.warning("result %s for %s not usable: %s", result.source_id, result.gene, err)
        if problems is not None:
            problems.append(f"{result.source_id or 'a result'}: {err}")
        return None
    return None


def patient_facts(engine: Engine, resources: Iterable[Any], allowed_statuses: Iterable[str] | None = None,
                  patient_ref: str | None = None, reader: GenomicReader | None = None) -> PatientFacts:
    """Read, select and interpret every pharmacogenomic result in `resources` (only the results of
    `patient_ref` when it is given), with `reader` (the Advisor's; else one made for this call)."""
    reader = reader or GenomicReader(default_mappings())
    reading = reader.read(list(resources), patient_ref=patient_ref)
    statuses = tuple(allowed_statuses) if allowed_statuses else DEFAULT_STATUSES
    current = select_current(reading.results, statuses, unreadable=reading.unreadable)
    facts = PatientFacts(conflicts=dict(current.conflicts), notes=reading.skipped + current.ignored,
                         unreadable=list(reading.skipped))
    _note_unreadable(engine, reading.unreadable, facts)
    for gene, older in current.superseded_by_unreadable.items():
        # the card that says the newer result could not be read names the older ones it replaced
        facts.unreadable_by_gene.setdefault(gene, []).extend(older)
    for gene, results in current.by_gene.items():
        facts.results.update({r.source_id: r for r in results if r.source_id})
        _interpret_gene(engine, gene, results, facts)
    return facts


def _note_unreadable(engine: Engine, unreadable: Iterable[Unreadable], facts: PatientFacts) -> None:
    """Each result that could not be read, under its gene, its allele and the drugs it was for."""
    for item in unreadable:
        if item.gene:
            facts.unreadable_by_gene.setdefault(item.gene, []).append(item.reason)
            if item.allele:
                facts.unreadable_by_allele.setdefault(allele_attribute(item.gene, item.allele), []).append(item.reason)
        for drug in {p.drug for p in (engine.drug_plan(d) for d in item.drugs) if p is not None}:
            facts.unreadable_by_drug.setdefault(drug, []).append(item.reason)


def _interpret_gene(engine: Engine, gene: str, results: list[GenomicResult], facts: PatientFacts) -> None:
    """The current results of one gene interpreted into `facts`: its interpretations, or a conflict, or
    the reasons they could not be interpreted."""
    if gene not in engine.kb.interpreters:
        facts.notes.extend(f"{r.source_id or 'a result'} ({gene}): no {gene} gene table in the knowledge base; "
                           "not interpreted" for r in results)
        return
    problems: list[str] = []
    interpretations = [i for i in (_interpret(engine, r, problems) for r in results) if i is not None]
    for i in interpretations:
        # e.g. an allele the CPIC table does not know; never CPIC's own Indeterminate or "n/a", which CPIC
        # keys recommendations by (CYP2C19 *1/*12, CYP2D6 *1/*22): those go through the engine as any key
        if i.unreadable:
            problems.append(f"{', '.join(i.source_ids) or 'a result'}: {i.reason}")
    if problems:
        facts.unreadable_by_gene.setdefault(gene, []).extend(problems)
        facts.notes.extend(problems)
    if not interpretations:
        return
    if disagree(interpretations):
        # e.g. a genotype of *1/*1 beside a reported "Poor Metabolizer": the lab contradicts itself
        facts.conflicts[gene] = sorted({s for i in interpretations for s in i.source_ids} or {"(no id)"})
        return
    # the most specific statement first (a diplotype before a phenotype stated beside it), as the engine
    # orders them, so whoever shows "the" result of a gene shows the same one whatever the input order
    facts.interpretations[gene] = sorted(interpretations, key=lambda i: STATED_ORDER.get(i.stated_as, 9))


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

    def __init__(self, engine: Engine, renderer: CardRenderer, resolver: MedicationResolver,
                 reader: GenomicReader | None = None):
        self.engine = engine
        self.kb = engine.kb
        self.renderer = renderer
        self.resolver = resolver
        # one genomic reader for the life of the Advisor: the diplotype texts it parses are remembered
        self.reader = reader or GenomicReader(default_mappings())

    @classmethod
    def build(cls, engine: Engine) -> Advisor:
        # a drug the sources give no RxNorm code (flucloxacillin) is matched by its name: the resolver keys
        # ingredients by code, so it gets a name key no RxNorm code can equal
        ingredients = {d.name.lower(): d.rxnorm or f"name:{d.name.lower()}" for gs in engine.kb.drugs().values()
                       for g in gs for d in g.drugs}
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
        notices = self.renderer.notices
        cards += notices.conflict_cards(hook, evaluation)
        cards += notices.uninterpretable_cards(hook, evaluation, uninterpretable)
        for drug, genes in by_allele.items():
            cards += notices.uninterpretable_cards(hook, evaluation, genes, only_drug=drug)
        cards += notices.assessed_uninterpretable_cards(hook, evaluation, facts.unreadable_by_drug)
        cards += notices.unidentified_cards(hook, orders)
        advice = Advice(cards, facts, orders, unresolved, evaluation)
        advice.decisions = no_card_reasons(hook, evaluation, cards)
        return advice

    def conflict_cards(self, hook: str, evaluation: Evaluation) -> list[RenderedCard]:
        """The conflict notices (cds.cards.notices); shared by the service and the workbench's typed results."""
        return self.renderer.notices.conflict_cards(hook, evaluation)

    def check_not_possible(self, hook: str, orders: list[MedicationOrder], reason: str) -> list[RenderedCard]:
        """Cards saying the check could not be completed (FHIR server down), for the drugs it concerns."""
        return self.renderer.notices.check_not_possible(hook, self.drugs_of(orders)[0], reason)

    def summarise_patient(self, facts: PatientFacts, active_orders: list[MedicationOrder],
                          app_url: str | None = None) -> Advice:
        drugs, _, unresolved = self.drugs_of(active_orders)
        evaluation = self.engine.evaluate(facts.interpretations, drugs, conflicts=facts.conflicts)
        cards = self.renderer.patient_summary(facts.interpretations, evaluation, evidence=facts.results,
                                              app_url=app_url)
        cards += self.conflict_cards("patient-view", evaluation)
        uninterpretable = uninterpretable_genes(facts, evaluation)
        for attribute, reasons in facts.unreadable_by_allele.items():
            gene = attribute_gene(attribute)   # an allele no readable result of its gene states
            if gene not in uninterpretable and gene not in facts.conflicts and not any(
                    attribute in i.lookup for i in facts.interpretations.get(gene, [])):
                uninterpretable.setdefault(gene, []).extend(reasons)
        if uninterpretable:
            cards.append(self.renderer.notices.summary_uninterpretable(uninterpretable))
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
            drug.matches = [m for m in drug.matches if m.recommendation.lookup.get(attribute) != NO_RESULT
                            and m.missing_gene != gene]
            out.setdefault(drug.drug, {}).setdefault(gene, []).extend(reasons)
    return out


def uninterpretable_genes(facts: PatientFacts, evaluation: Evaluation) -> dict[str, list[str]]:
    """Genes with a result on file that could not be read or interpreted and no usable result beside it
    (an unreadable interpretation is not a usable result; CPIC's own Indeterminate is), minus genes
    already in conflict."""
    out = {}
    for gene, reasons in facts.unreadable_by_gene.items():
        if gene in facts.conflicts or gene in evaluation.conflicts:
            continue
        if any(not i.unreadable for i in facts.interpretations.get(gene, [])):
            continue
        out[gene] = reasons
    return out

