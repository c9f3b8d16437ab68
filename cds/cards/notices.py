"""Cards about the check itself, not about a guideline: what could not be decided is said, never left
silent — results that conflict, results on file that could not be interpreted, an order that could
not be identified, results that could not be retrieved, advice keyed in a way our gene tables cannot
reach. Each is decided here as a notice (cds.cards.model), then written by cds.cards.text."""
from __future__ import annotations

from typing import Any

from cds.engine import DrugEvaluation, Evaluation
from cds.facts import MedicationOrder
from cds.genotype import Interpretation
from cds.ids import new_uuid
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import Guideline, Rule

from . import text
from .model import (
    AssessedUninterpretable,
    Conflict,
    Notice,
    NotRetrieved,
    RenderedCard,
    Unidentified,
    Uninterpretable,
    UnreachableKeys,
)
from .statements import Chooser


class Notices:
    """Built once with the knowledge base and the engine (which drugs depend on which genes)."""

    def __init__(self, kb: KnowledgeBase, engine: Any, chooser: Chooser):
        self.kb = kb
        self.engine = engine
        self.chooser = chooser

    def card(self, notice: Notice) -> RenderedCard:
        summary, detail = text.notice_words(notice, self.kb.version)
        card = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": detail,
            "indicator": notice.indicator,
            "source": text.notice_source(notice.code),
        }
        return RenderedCard(card, notice.code, notice.drug or "", notice=notice)

    def cards(self, notices: list[Notice]) -> list[RenderedCard]:
        return [self.card(n) for n in notices]

    # --- order hooks --------------------------------------------------------------------------

    def unreachable_notices(self, drug: DrugEvaluation, rule: Rule, evaluation: Evaluation) -> list[RenderedCard]:
        """Silence is a statement: when a selected guideline has advice for a gene the patient has a result
        for, but keys it in a way our gene tables cannot reach (e.g. DPWG's genotype-keyed CYP2C9 advice for
        a CYP2C9 diplotype) and none of its recommendations matched, say so instead of showing nothing."""
        selected = set(self.chooser.rule_sources(rule))
        matched = {m.guideline.id for m in drug.matches}
        found = [self._unreachable(g, drug.drug, rule, evaluation) for g in self.kb.drugs().get(drug.drug, [])
                 if g.source in selected and g.id not in matched]
        return self.cards([n for n in found if n is not None])

    def _unreachable(self, g: Guideline, drug: str, rule: Rule, evaluation: Evaluation) -> UnreachableKeys | None:
        keys, keyed_genes = self.chooser.unreachable_keys(g, drug)
        genes = tuple(gene for gene in keyed_genes
                      if any(not i.indeterminate for i in evaluation.interpretations.get(gene, [])))
        if not genes:
            return None
        results = tuple(_shown(gene, evaluation.interpretations[gene][0]) for gene in genes)
        reasons = tuple(sorted({u.reason for u in keys if any(gene in u.source_key for gene in genes)}))
        return UnreachableKeys(drug, g, genes, results, reasons, rule.id)

    def uninterpretable_cards(self, hook: str, evaluation: Evaluation, genes: dict[str, list[str]],
                              only_drug: str | None = None) -> list[RenderedCard]:
        """A card per ordered drug (governed on this hook; `only_drug`: that one alone) that depends on a
        gene whose result on file could not be read or interpreted, naming the result and why."""
        notices: list[Notice] = []
        for drug in evaluation.drugs if genes else []:
            if hook not in drug.rules or only_drug not in (None, drug.drug):
                continue
            mine = tuple(sorted(self._genes_of(drug.drug) & set(genes)))
            if mine:
                notices.append(Uninterpretable(drug.drug, mine, tuple(r for g in mine for r in genes[g])))
        return self.cards(notices)

    def assessed_uninterpretable_cards(self, hook: str, evaluation: Evaluation,
                                       by_drug: dict[str, list[str]]) -> list[RenderedCard]:
        """A card per ordered drug (governed on this hook, no advice given) that a result on file assesses
        but whose gene could not be told (a therapeutic implication naming the drug, derived from a genotype
        that is not here): the result is on file, so never silence."""
        return self.cards([AssessedUninterpretable(drug.drug, tuple(by_drug[drug.drug])) for drug in evaluation.drugs
                           if by_drug.get(drug.drug) and hook in drug.rules and not drug.matches])

    def unidentified_cards(self, hook: str, orders: list[MedicationOrder]) -> list[RenderedCard]:
        """A card for an order we could not identify only when it may be a drug the knowledge base covers
        on this hook: its codes or names disagree and one of them names such a drug (clopidogrel and
        simvastatin codes on one order). Other unidentified orders (an RxNorm product not in the table,
        SNOMED CT) are audited and counted, not carded: most are drugs without pharmacogenomic advice,
        and a card on each would teach clinicians to ignore the cards that matter."""
        notices: list[Notice] = []
        for order in orders:
            governed = self._governed(order, hook) if order.unresolved else []
            if governed:
                shown = order.display or ", ".join(order.codes) or (order.order_id or "an order")
                notices.append(Unidentified(governed[0], shown, tuple(order.codes),
                                            tuple(i.name for i in order.candidates)))
        return self.cards(notices)

    def _governed(self, order: MedicationOrder, hook: str) -> list[str]:
        """The drugs an order's candidate ingredients may be that a rule governs on this hook."""
        governed: list[str] = []
        for ingredient in order.candidates:
            plan = self.engine.drug_plan(ingredient.rxnorm) or self.engine.drug_plan(ingredient.name)
            if plan is not None and hook in plan.rules and plan.drug not in governed:
                governed.append(plan.drug)
        return governed

    def conflict_cards(self, hook: str, evaluation: Evaluation) -> list[RenderedCard]:
        """Say a conflict, never let it pass silently: per ordered drug governed on this hook whose
        genes include a conflicting one (order hooks), or one card for the patient (patient-view).
        Shared by the service and the workbench's typed results."""
        conflicts = evaluation.conflicts
        if not conflicts:
            return []
        if hook == "patient-view":
            involved = tuple(s for ids in conflicts.values() for s in ids)
            return [self.card(Conflict(None, tuple(sorted(conflicts)), involved))]
        notices: list[Notice] = []
        for drug in evaluation.drugs:
            conflicting = tuple(sorted(self._genes_of(drug.drug) & set(conflicts)))
            if conflicting and hook in drug.rules:
                notices.append(Conflict(drug.drug, conflicting, tuple(s for g in conflicting for s in conflicts[g])))
        return self.cards(notices)

    def check_not_possible(self, hook: str, drugs: list[str], reason: str) -> list[RenderedCard]:
        """Cards saying the check could not be completed (FHIR server down), for the ordered drugs it
        concerns (those governed on this hook)."""
        notices: list[Notice] = []
        for drug in drugs:
            plan = self.engine.drug_plan(drug)
            if plan and hook in plan.rules:
                notices.append(NotRetrieved(drug, reason))
        return self.cards(notices)

    def _genes_of(self, drug: str) -> set[str]:
        plan = self.engine.drug_plan(drug)
        return set(plan.attributes.values()) if plan else set()

    # --- patient-view -----------------------------------------------------------------------------

    def summary_not_possible(self, reason: str) -> RenderedCard:
        """patient-view: the results could not be retrieved, so there is no summary."""
        return self.card(NotRetrieved(None, reason))

    def summary_uninterpretable(self, genes: dict[str, list[str]]) -> RenderedCard:
        """patient-view: results on file that could not be read or interpreted, gene → why."""
        return self.card(Uninterpretable(None, tuple(sorted(genes)), tuple(r for rs in genes.values() for r in rs)))


def _shown(gene: str, first: Interpretation) -> str:
    """A gene's first result as the notice names it: its diplotype, else its phenotype."""
    return f"{gene} {first.diplotype or first.phenotype}"
