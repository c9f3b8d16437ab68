"""Cards about the check itself, not about a guideline: what could not be decided is said, never left
silent — results that conflict, results on file that could not be interpreted, an order that could
not be identified, results that could not be retrieved, advice keyed in a way our gene tables cannot
reach."""
from __future__ import annotations

from typing import Any

from cds.engine import DrugEvaluation, Evaluation
from cds.facts import MedicationOrder
from cds.ids import new_uuid
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import Rule
from cds.mdescape import md_data, md_text

from .model import TOPIC_SYSTEM, RenderedCard, Statement
from .statements import Chooser
from .text import SUMMARY_LIMIT


class Notices:
    """Built once with the knowledge base and the engine (which drugs depend on which genes)."""

    def __init__(self, kb: KnowledgeBase, engine: Any, chooser: Chooser):
        self.kb = kb
        self.engine = engine
        self.chooser = chooser

    def notice_card(self, drug: str, summary: str, detail: str, code: str, indicator: str = "warning") -> RenderedCard:
        """A card about the check itself (results conflict, results unreachable), not about a guideline.
        `summary` and `detail` are our own sentences; whatever they quote from the request must already be
        escaped with cds.mdescape.md_data by the caller."""
        summary = " ".join(summary.split())
        if len(summary) > SUMMARY_LIMIT:
            summary = (f"{drug.capitalize()}: " if drug else "") + "pharmacogenomic check incomplete — see detail"
        card = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": f"{detail}\n\nKnowledge base version `{self.kb.version}`.",
            "indicator": indicator,
            "source": {"label": "pgx-cds", "topic": {"system": TOPIC_SYSTEM, "code": code, "display": code.replace("-", " ")}},
        }
        return RenderedCard(card, code, drug, None, None, None, [])

    def _genes_of(self, drug: str) -> set[str]:
        plan = self.engine.drug_plan(drug)
        return set(plan.attributes.values()) if plan else set()

    def unreachable_notices(self, drug: DrugEvaluation, rule: Rule, evaluation: Evaluation,
                            statements: list[Statement]) -> list[RenderedCard]:
        """Silence is a statement: when a selected guideline has advice for a gene the patient has a result
        for, but keys it in a way our gene tables cannot reach (e.g. DPWG's genotype-keyed CYP2C9 advice for
        a CYP2C9 diplotype) and none of its recommendations matched, say so instead of showing nothing."""
        out = []
        selected = set(self.chooser.rule_sources(rule))
        matched = {m.guideline.id for m in drug.matches}
        for g in self.kb.drugs().get(drug.drug, []):
            if g.source not in selected or g.id in matched:
                continue
            keys, keyed_genes = self.chooser.unreachable_keys(g, drug.drug)
            genes = [gene for gene in keyed_genes
                     if any(not i.indeterminate for i in evaluation.interpretations.get(gene, []))]
            if not genes:
                continue
            results = "; ".join(f"{gene} {i.diplotype or i.phenotype}" for gene in genes for i in evaluation.interpretations[gene][:1])
            reasons = sorted({u.reason for u in keys if any(gene in u.source_key for gene in genes)})
            detail = (f"The {g.source} guideline [{md_text(g.name)}]({g.url}) has advice for {drug.drug} by "
                      f"{', '.join(genes)}, but none of it could be matched to this result ({md_data(results)}): some of "
                      "its recommendations are keyed in a way our gene tables cannot produce:\n\n"
                      + "\n".join(f"- {md_text(r)}" for r in reasons)
                      + f"\n\nRead the guideline before prescribing. Rule `{rule.id}`.")
            out.append(self.notice_card(drug.drug, f"{drug.drug.capitalize()}: {results} — {g.source} advice could not be "
                                                   "matched to this result; see the guideline", detail,
                                        f"{g.source.lower()}-key-unreachable", indicator="info"))
        return out

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
            mine = sorted(self._genes_of(drug.drug) & set(genes))
            if not mine:
                continue
            names = ", ".join(mine)
            cards.append(self.notice_card(
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
            cards.append(self.notice_card(
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
            return [self.notice_card(
                "", f"Conflicting pharmacogenomic results on file: {genes}",
                "Current results for these genes disagree; no genotype-based advice is given for them until the "
                "laboratory confirms one. Results involved: "
                + ", ".join(md_data(s) for ids in conflicts.values() for s in ids), "conflicting-results")]
        cards = []
        for drug in evaluation.drugs:
            conflicting = sorted(self._genes_of(drug.drug) & set(conflicts))
            if conflicting and hook in drug.rules:
                cards.append(self.notice_card(
                    drug.drug, f"{drug.drug.capitalize()}: conflicting {', '.join(conflicting)} results on file — "
                               "pharmacogenomic check not possible",
                    "Two current results for the same gene disagree, so no genotype-based advice is given for it. "
                    "Results involved: " + ", ".join(md_data(s) for g in conflicting for s in conflicts[g]) +
                    ". Ask the laboratory to confirm the result.", "conflicting-results"))
        return cards

    def check_not_possible(self, hook: str, drugs: list[str], reason: str) -> list[RenderedCard]:
        """Cards saying the check could not be completed (FHIR server down), for the ordered drugs it
        concerns (those governed on this hook)."""
        cards = []
        for drug in drugs:
            plan = self.engine.drug_plan(drug)
            if plan and hook in plan.rules:
                cards.append(self.notice_card(
                    drug, f"{drug.capitalize()}: pharmacogenomic check could not be completed",
                    f"The patient's pharmacogenomic results could not be retrieved ({md_data(reason)}). "
                    "No genotype-based advice was given; check the results before prescribing.", "check-incomplete",
                    indicator="warning"))
        return cards

    def summary_not_possible(self, reason: str) -> RenderedCard:
        """patient-view: the results could not be retrieved, so there is no summary."""
        return self.notice_card("", "Pharmacogenomic summary could not be completed",
                                f"The patient's pharmacogenomic results could not be retrieved "
                                f"({md_data(reason)}).", "check-incomplete")

    def summary_uninterpretable(self, genes: dict[str, list[str]]) -> RenderedCard:
        """patient-view: results on file that could not be read or interpreted, gene → why."""
        return self.notice_card(
            "", f"Pharmacogenomic results on file could not be interpreted: {', '.join(sorted(genes))}",
            "These results are on file but could not be read or interpreted, so no advice rests on them. "
            "Results involved: " + "; ".join(md_data(r) for rs in genes.values() for r in rs)
            + ". Review them or ask the laboratory.", "result-not-interpretable")
