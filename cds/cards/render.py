"""Turn an evaluation into CDS Hooks 2.0 cards, applying the local policy in rules/.

One card per drug and governing rule. A card carries one or more *statements*: the CPIC
recommendation for the patient, or several labelled ones when several apply and the request does not
say which (the drug's populations — clopidogrel ACS/PCI vs. neurovascular, voriconazole adults vs.
children without a birth date —, or the activity scores a phenotype-only result may have). Its
indicator is the most cautious of its statements.

This module assembles: the policy (cds.cards.policy), the statements (cds.cards.statements) and the
notices (cds.cards.notices) are decided first, as data; the words come from cds.cards.text, the
suggestions and links from cds.cards.actions. See rules/default.yaml for the default policy.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds.engine import DrugEvaluation, Evaluation, Match, PreTestAlert
from cds.facts import GenomicResult
from cds.genotype import Interpretation
from cds.ids import new_uuid
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Guideline, Recommendation, Rule
from cds.memo import Memo
from cds.override_reasons import OVERRIDE_REASONS
from cds.populations import population_words
from cds.sources import SOURCE_ORDER, of_sources

from . import actions, text
from .model import AffectedDrug, CardPolicy, Headline, OrderRef, RenderedCard, Statement
from .notices import Notices
from .policy import PolicyBook, most_cautious
from .statements import MEMO_ENTRIES, Chooser, differences, interpretations_key, statement_key


class CardRenderer:
    """Built once at start-up with the knowledge base (and the engine, to look up the patient's
    recommendation for a suggested alternative drug); renders cards per request."""

    def __init__(self, kb: KnowledgeBase, engine: Any = None):
        self.kb = kb
        self.engine = engine
        self.policies = PolicyBook(kb)
        self.chooser = Chooser(kb, self.policies)
        self.notices = Notices(kb, engine, self.chooser)
        # What a card says that rests on the knowledge alone, rendered once per combination: a headline
        # per (drug, statements, results named), the knowledge part of a detail per (statements, rule),
        # the dose sentences per (alternatives, interpreted results). The knowledge never changes under
        # a renderer, so a remembered text cannot go stale; each table is bounded.
        self._summaries: Memo[Headline] = Memo(MEMO_ENTRIES)
        self._details: Memo[text.DetailParts] = Memo(MEMO_ENTRIES)
        self._doses: Memo[dict[str, str | None]] = Memo(MEMO_ENTRIES)

    def policy(self, rule: Rule, rec: Recommendation) -> CardPolicy | None:
        return self.policies.policy(rule, rec)

    def statements(self, rule: Rule, matches: list[Match]) -> list[Statement]:
        """The labelled statements of one card: a part of the label only where the statements differ."""
        return self.chooser.statements(rule, matches)

    # --- order hooks --------------------------------------------------------------------------

    def order_cards(self, evaluation: Evaluation, hook: str, orders: dict[str, OrderRef] | None = None,
                    patient_ref: str | None = None, population: str | None = None,
                    age: int | None = None, evidence: Mapping[str, GenomicResult] | None = None,
                    app_url: str | None = None) -> list[RenderedCard]:
        """Cards for order-select / order-sign: one per drug and rule, pre-test alerts.

        `evidence`: the genomic results by source id (date, laboratory); `app_url`: the SMART summary
        page of this service, for the card's `smart` link (None: no link, e.g. `cds test`)."""
        cards: list[RenderedCard] = []
        for drug in evaluation.drugs:
            rule = drug.rules.get(hook)
            if rule is None:
                continue  # no rule governs this drug on this hook (or it is switched off)
            order = (orders or {}).get(drug.drug, OrderRef())
            alerts = [a for a in drug.pretests if a.rule.id == rule.id]
            cards += [self._pretest_card(drug, alert, order, patient_ref) for alert in alerts]
            statements = self.statements(rule, self.chooser.order_matches(drug, rule, population, age, alerts))
            cards += self.notices.unreachable_notices(drug, rule, evaluation)
            if any(s.policy for s in statements):
                cards.append(self._recommendation_card(drug, statements, rule, evaluation, order, patient_ref,
                                                       evidence or {}, app_url))
        return cards

    def _recommendation_card(self, drug: DrugEvaluation, statements: list[Statement], rule: Rule,
                             evaluation: Evaluation, order: OrderRef, patient_ref: str | None,
                             evidence: Mapping[str, GenomicResult], app_url: str | None) -> RenderedCard:
        carded = [s for s in statements if s.policy]
        guidelines = list({s.match.guideline.id: s.match.guideline for s in statements}.values())
        sources = sorted({g.source for g in guidelines}, key=lambda x: SOURCE_ORDER.get(x, 9))
        facts = self.chooser.results(evaluation, statements, evidence)
        names = self._result_names(facts)
        keys = tuple(statement_key(s) for s in statements)
        headline = self._summaries.get((drug.drug, keys, names),
                                       lambda: text.headline(drug.drug, statements, list(names)))
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": text.headline_text(headline),
            "detail": self._detail(statements, rule, facts, app_url is not None, keys),
            "indicator": most_cautious(s.policy.indicator for s in carded if s.policy),
            "source": text.card_source(carded[0].match.guideline, rule, sources),
            "links": ([self.smart_link(app_url, evaluation, evidence, drug.drug)] if app_url else [])
                     + actions.guideline_links(guidelines),
            "overrideReasons": OVERRIDE_REASONS,
        }
        suggestions = self._suggestions(drug, statements, rule, evaluation, order, patient_ref)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "at-most-one"
        ids, versions, recommendations = _audited(guidelines, statements, carded[0])
        return RenderedCard(card, rule.id, drug.drug, ids, versions, recommendations, facts, statements=statements,
                            sources=list(sources), headline=headline)

    def _result_names(self, facts: list[dict[str, Any]]) -> tuple[str, ...]:
        """The results a summary names, each once (a phenotype-only result has a fact per score)."""
        return tuple(dict.fromkeys(
            text.result_name(f["gene"], f["phenotype"], self.kb.interpreters[f["gene"]].kind == "allele-status")
            for f in facts if f["lookup_key"] != NO_RESULT))

    def _detail(self, statements: list[Statement], rule: Rule, facts: list[dict[str, Any]], has_app: bool,
                keys: tuple | None = None) -> str:
        key = (keys if keys is not None else tuple(statement_key(s) for s in statements), rule.id, has_app)
        parts = self._details.get(key, lambda: text.detail_parts(statements, rule, has_app, self.kb.version))
        return text.detail(parts, facts)

    def _suggestions(self, drug: DrugEvaluation, statements: list[Statement], rule: Rule, evaluation: Evaluation,
                     order: OrderRef, patient_ref: str | None) -> list[dict[str, Any]]:
        """The rule's alternatives, each replacing the draft order, when a statement's policy suggests them;
        the test for a gene with no result on file whose value decides between the statements."""
        tests = [actions.order_test_suggestion(gene, order, patient_ref)
                 for gene in sorted({s.missing_gene for s in statements if s.missing_gene})]
        suggesting = [s for s in statements if s.policy and s.policy.suggest_alternatives]
        if not suggesting or not rule.alternatives:
            return tests
        # When the statements differ by population, a suggestion says whose advice it follows
        # (prasugrel is CPIC's advice for ACS/PCI, not for a patient with a stroke).
        lead = suggesting[0].population
        whose = population_words(lead) if lead and differences(statements).beyond_score else None
        doses = self.dose_advices(evaluation, [alt.name for alt in rule.alternatives])
        return [actions.replace_suggestion(drug.drug, alt, order, patient_ref, doses[alt.name], whose)
                for alt in rule.alternatives] + tests

    # --- suggestions and links ---------------------------------------------------------------

    def dose_advice(self, evaluation: Evaluation, drug: str) -> str | None:
        """CPIC's own sentence giving a dose for `drug` and this patient (e.g. rosuvastatin with SLCO1B1
        poor function: "Prescribe ≤20mg as a starting dose …"), or None when CPIC gives none or its
        populations disagree."""
        return self.dose_advices(evaluation, [drug])[drug]

    def dose_advices(self, evaluation: Evaluation, drugs: list[str]) -> dict[str, str | None]:
        """dose_advice for each of `drugs`, in one engine evaluation (a card's alternatives: the engine
        evaluates each drug on its own, so together or apart the answers are the same)."""
        key = (tuple(drugs), interpretations_key(evaluation.interpretations))
        return dict(self._doses.get(key, lambda: self._dose_sentences(evaluation, drugs)))

    def _dose_sentences(self, evaluation: Evaluation, drugs: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = dict.fromkeys(drugs)
        known = [d for d in out if self.engine is not None and self.engine.drug_plan(d) is not None]
        if not known:
            return out
        try:
            evaluated = self.engine.evaluate(evaluation.interpretations, known).drugs
        except Exception:
            return out
        for drug, result in zip(known, evaluated, strict=False):
            out[drug] = actions.dose_sentence(of_sources(result.matches, ["CPIC"]))
        return out

    def smart_link(self, app_url: str, evaluation: Evaluation | None, evidence: Mapping[str, GenomicResult],
                   drug: str | None = None) -> dict[str, Any]:
        return actions.smart_link(app_url, evaluation, evidence, drug)

    # --- pre-test alerts ------------------------------------------------------------------------

    def _pretest_card(self, drug: DrugEvaluation, alert: PreTestAlert, order: OrderRef,
                      patient_ref: str | None) -> RenderedCard:
        pre = alert.rule.pretest
        assert pre is not None
        test = text.genetic_test_name(alert.gene, pre.test_display)
        guideline = next((g for g in self.kb.drugs().get(drug.drug, []) if alert.gene in g.genes), None)
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": text.pretest_summary(drug.drug, alert.gene, test, pre.summary),
            "detail": text.pretest_detail(drug.drug, alert.gene, guideline, alert.rule.id, self.kb.version),
            "indicator": pre.indicator,
            "source": text.card_source(guideline, alert.rule) if guideline else text.local_policy_source(),
            "suggestions": [actions.pretest_suggestion(test, order.resource, patient_ref)],
            "selectionBehavior": "at-most-one",
            "overrideReasons": OVERRIDE_REASONS,
        }
        if guideline:
            card["links"] = [{"label": text.PRETEST_GUIDELINE_LINK, "url": guideline.url, "type": "absolute"}]
        facts = [{"gene": alert.gene, "phenotype": NO_RESULT, "lookup_key": NO_RESULT, "source_ids": []}]
        return RenderedCard(card, alert.rule.id, drug.drug, [guideline.id] if guideline else [],
                            [guideline.version] if guideline else [], [], facts, pretest=True)

    # --- patient-view -----------------------------------------------------------------------------

    def patient_summary(self, interpretations: dict[str, list[Interpretation]], evaluation: Evaluation | None,
                        hook: str = "patient-view", evidence: Mapping[str, GenomicResult] | None = None,
                        app_url: str | None = None) -> list[RenderedCard]:
        """One card: the patient's actionable results (CPIC EHR priority) and the active drugs they affect."""
        results = self.chooser.actionable_results(interpretations)
        affected = self.chooser.affected_drugs(evaluation, hook)
        if not results and not affected:
            return []
        drugs = sorted({a.drug for a in affected})
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": text.patient_summary(results, drugs),
            "detail": text.patient_detail(results, affected, self.kb.version),
            "indicator": "warning" if affected else "info",
            "source": text.patient_summary_source(),
        }
        if app_url:
            card["links"] = [self.smart_link(app_url, evaluation, evidence or {})]
        facts = [_fact(r.gene, r.interpretation) for r in results]
        return [RenderedCard(card, "patient-summary", ", ".join(drugs), facts=facts, statements=_raising(affected))]


def _raising(affected: list[AffectedDrug]) -> list[Statement]:
    """The statements that raise a card, of every affected drug."""
    return [s for a in affected for s in a.statements if s.policy]


def _fact(gene: str, interp: Interpretation) -> dict[str, Any]:
    return {"gene": gene, "phenotype": interp.phenotype, "lookup_key": interp.lookup_key,
            "source_ids": list(interp.source_ids)}


def _audited(guidelines: list[Guideline], statements: list[Statement],
             first: Statement) -> tuple[list[str], list[str], list[str]]:
    """What the audit records a card rests on: its guideline, version and first raising recommendation,
    or, when it rests on several guidelines, every guideline, version and recommendation."""
    if len(guidelines) > 1:
        return ([g.id for g in guidelines], list(dict.fromkeys(g.version for g in guidelines)),
                [s.recommendation.id for s in statements])
    return [first.match.guideline.id], [first.match.guideline.version], [first.recommendation.id]
