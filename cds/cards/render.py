"""Turn an evaluation into CDS Hooks 2.0 cards, applying the local policy in rules/.

One card per drug and governing rule. A card carries one or more *statements*: the CPIC
recommendation for the patient, or several labelled ones when several apply and the request does not
say which (the drug's populations — clopidogrel ACS/PCI vs. neurovascular, voriconazole adults vs.
children without a birth date —, or the activity scores a phenotype-only result may have). Its
indicator is the most cautious of its statements.

This module assembles: the policy (cds.cards.policy) and the statements (cds.cards.statements) are
decided first, the words come from cds.cards.text, the suggestions and links from cds.cards.actions.
See rules/default.yaml for the default policy.
"""
from __future__ import annotations

from typing import Any, Mapping

from cds.engine import DrugEvaluation, Evaluation, Match, PreTestAlert
from cds.facts import GenomicResult
from cds.genotype import Interpretation
from cds.ids import new_uuid
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Recommendation, Rule
from cds.mdescape import md_data, md_text
from cds.memo import Memo
from cds.populations import population_words
from cds.sources import SOURCE_ORDER, of_sources

from . import actions, text
from .actions import OVERRIDE_REASONS
from .model import TOPIC_SYSTEM, CardPolicy, Headline, OrderRef, RenderedCard, Statement
from .notices import Notices
from .policy import PolicyBook, most_cautious
from .statements import MEMO_ENTRIES, Chooser, choose_population, differences, interpretations_key, statement_key
from .text import ATTRIBUTION, SUMMARY_LIMIT


class CardRenderer:
    """Built once at start-up with the knowledge base (and the engine, to look up the patient's
    recommendation for a suggested alternative drug); renders cards per request."""

    def __init__(self, kb: KnowledgeBase, engine: Any = None):
        self.kb = kb
        self.engine = engine
        self.policies = PolicyBook(kb)
        self.chooser = Chooser(kb, self.policies)
        self.notices = Notices(kb, engine, self.chooser)
        # What a card says that rests on the knowledge alone, rendered once per combination: a summary
        # per (drug, statements, short results), the knowledge part of a detail per (statements, rule),
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

    def notice_card(self, drug: str, summary: str, detail: str, code: str, indicator: str = "warning") -> RenderedCard:
        return self.notices.notice_card(drug, summary, detail, code, indicator)

    def unreachable_notices(self, drug: DrugEvaluation, rule: Rule, evaluation: Evaluation,
                            statements: list[Statement]) -> list[RenderedCard]:
        return self.notices.unreachable_notices(drug, rule, evaluation, statements)

    # --- order hooks --------------------------------------------------------------------------

    def order_cards(self, evaluation: Evaluation, hook: str, orders: dict[str, OrderRef] | None = None,
                    patient_ref: str | None = None, population: str | None = None,
                    age: int | None = None, evidence: Mapping[str, GenomicResult] | None = None,
                    app_url: str | None = None) -> list[RenderedCard]:
        """Cards for order-select / order-sign: one per drug and rule, pre-test alerts.

        `evidence`: the genomic results by source id (date, laboratory); `app_url`: the SMART summary
        page of this service, for the card's `smart` link (None: no link, e.g. `cds test`)."""
        orders = orders or {}
        cards: list[RenderedCard] = []
        for drug in evaluation.drugs:
            rule = drug.rules.get(hook)
            if rule is None:
                continue  # no rule governs this drug on this hook (or it is switched off)
            order = orders.get(drug.drug, OrderRef())
            pretest_genes = {p.gene for p in drug.pretests if p.rule.id == rule.id}
            for alert in drug.pretests:
                if alert.rule.id == rule.id:
                    cards.append(self._pretest_card(drug, alert, order, patient_ref))
            matches = self.chooser.order_matches(drug, rule, population, age, pretest_genes)
            statements = self.statements(rule, matches)
            cards.extend(self.notices.unreachable_notices(drug, rule, evaluation, statements))
            if any(s.policy for s in statements):
                cards.append(self._recommendation_card(drug, statements, rule, evaluation, order, patient_ref,
                                                       evidence or {}, app_url))
        return cards

    def _recommendation_card(self, drug: DrugEvaluation, statements: list[Statement], rule: Rule,
                             evaluation: Evaluation, order: OrderRef, patient_ref: str | None,
                             evidence: Mapping[str, GenomicResult], app_url: str | None) -> RenderedCard:
        carded = [s for s in statements if s.policy]
        first = carded[0]
        guidelines = list({s.match.guideline.id: s.match.guideline for s in statements}.values())
        sources = sorted({g.source for g in guidelines}, key=lambda x: SOURCE_ORDER.get(x, 9))
        facts = self.chooser.results(evaluation, statements, evidence)
        names = self._result_names(facts)
        keys = tuple(statement_key(s) for s in statements)
        headline = self._summaries.get((drug.drug, keys, names), lambda: text.headline(drug.drug, statements, list(names)))
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": text.headline_text(headline),
            "detail": self._detail(statements, rule, facts, app_url is not None, keys),
            "indicator": most_cautious(s.policy.indicator for s in carded),
            "source": text.card_source(first.match.guideline, rule, sources),
            "links": [],
            "overrideReasons": OVERRIDE_REASONS,
        }
        if app_url:
            card["links"].append(self.smart_link(app_url, evaluation, evidence, drug.drug))
        for g in guidelines:
            card["links"].append({"label": f"{g.source} guideline: {g.name.removeprefix(g.source + ' Guideline for ')}",
                                  "url": g.url, "type": "absolute"})
            if g.annotation_url and g.annotation_url != g.url:
                card["links"].append({"label": "PharmGKB guideline annotation", "url": g.annotation_url, "type": "absolute"})
        suggesting = [s for s in carded if s.policy.suggest_alternatives]
        if suggesting and rule.alternatives:
            # When the statements differ by population, a suggestion says whose advice it follows
            # (prasugrel is CPIC's advice for ACS/PCI, not for a patient with a stroke).
            by_population = differences(statements).beyond_score
            whose = population_words(suggesting[0].population) if by_population and suggesting[0].population else None
            doses = self.dose_advices(evaluation, [alt.name for alt in rule.alternatives])
            card["suggestions"] = [actions.replace_suggestion(drug.drug, alt, order, patient_ref, doses[alt.name], whose)
                                   for alt in rule.alternatives]
            card["selectionBehavior"] = "at-most-one"
        if len(guidelines) > 1:   # the audit records every guideline and recommendation the card rests on
            ids = (" + ".join(g.id for g in guidelines), " + ".join(dict.fromkeys(g.version for g in guidelines)),
                   " + ".join(s.recommendation.id for s in statements))
        else:
            ids = (first.match.guideline.id, first.match.guideline.version, first.recommendation.id)
        return RenderedCard(card, rule.id, drug.drug, *ids, facts, statements=statements, sources=sources,
                            headline=headline)

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
        except Exception:  # noqa: BLE001 - a suggestion without dose text beats no card
            return out
        for drug, result in zip(known, evaluated):
            out[drug] = actions.dose_sentence(of_sources(result.matches, ["CPIC"]))
        return out

    def smart_link(self, app_url: str, evaluation: Evaluation | None, evidence: Mapping[str, GenomicResult],
                   drug: str | None = None) -> dict[str, Any]:
        return actions.smart_link(app_url, evaluation, evidence, drug)

    def _pretest_card(self, drug: DrugEvaluation, alert: PreTestAlert, order: OrderRef, patient_ref: str | None) -> RenderedCard:
        pre = alert.rule.pretest
        assert pre is not None
        test = pre.test_display or f"{alert.gene} genotyping"
        template = pre.summary or "{Drug}: no {gene} result on file — order {test} before prescribing"
        summary = " ".join(template.format(Drug=drug.drug.capitalize(), drug=drug.drug, gene=alert.gene, test=test).split())
        if len(summary) > SUMMARY_LIMIT:
            summary = f"{drug.drug.capitalize()}: no {alert.gene} result on file — test before prescribing"
        guideline = next((g for g in self.kb.drugs().get(drug.drug, []) if alert.gene in g.genes), None)
        detail_lines = [f"No {alert.gene} result is on file for this patient. The drug label requires (or CPIC "
                        f"recommends) {alert.gene} testing before {drug.drug} is prescribed.", ""]
        if guideline:
            detail_lines.append(f"**Guideline:** [{md_text(guideline.name)}]({guideline.url}).")
        detail_lines += [f"Rule `{alert.rule.id}`; knowledge base version `{self.kb.version}`.", "", f"_{md_text(ATTRIBUTION)}_"]
        service_request = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "code": {"text": test},
            "subject": {"reference": actions.subject(order.resource, patient_ref)},
        }
        card = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": "\n".join(detail_lines),
            "indicator": pre.indicator,
            "source": text.card_source(guideline, alert.rule) if guideline else {"label": "pgx-cds local policy"},
            "suggestions": [{"label": f"Order {test}", "uuid": new_uuid(),
                             "actions": [{"type": "create", "description": f"Create a draft order for {test}",
                                          "resource": service_request}]}],
            "selectionBehavior": "at-most-one",
            "overrideReasons": OVERRIDE_REASONS,
        }
        if guideline:
            card["links"] = [{"label": "CPIC guideline", "url": guideline.url, "type": "absolute"}]
        facts = [{"gene": alert.gene, "phenotype": NO_RESULT, "lookup_key": NO_RESULT, "source_ids": []}]
        return RenderedCard(card, alert.rule.id, drug.drug, guideline.id if guideline else None,
                            guideline.version if guideline else None, None, facts, pretest=True)

    # --- patient-view -----------------------------------------------------------------------------

    def patient_summary(self, interpretations: dict[str, list[Interpretation]], evaluation: Evaluation | None,
                        hook: str = "patient-view", evidence: Mapping[str, GenomicResult] | None = None,
                        app_url: str | None = None) -> list[RenderedCard]:
        """One card: the patient's actionable results (CPIC EHR priority) and the active drugs they affect."""
        actionable: list[tuple[str, Interpretation, str | None]] = []
        for gene, items in sorted(interpretations.items()):
            table = self.kb.genes.get(gene)
            for interp in items:
                for key in interp.lookup.values():
                    result_text = table.result_text(key) if table else None
                    if result_text and result_text.is_priority:
                        actionable.append((gene, interp, result_text.consultation))
                        break
        affected: list[tuple[str, list[Statement]]] = []
        for drug in (evaluation.drugs if evaluation else []):
            rule = drug.rules.get(hook) or drug.rules.get("order-sign")
            if rule is None:
                continue
            statements = self.statements(rule, of_sources(choose_population(drug, rule, None, None),
                                                          self.chooser.rule_sources(rule)))
            if any(s.policy for s in statements):
                affected.append((drug.drug, statements))
        if not actionable and not affected:
            return []
        names = [f"{g}{i.phenotype}" if self.kb.interpreters[g].kind == "allele-status" else f"{g} {i.phenotype}"
                 for g, i, _ in actionable]
        drugs = sorted({d for d, _ in affected})
        summary = text.fit_list("Pharmacogenomic results to act on: ", names) if names else \
            "Active medications affected by pharmacogenomic results"
        if drugs:
            longer = f"{summary}; affects {', '.join(drugs)}"
            summary = longer if len(longer) <= SUMMARY_LIMIT else text.fit_list(summary + "; affects ", drugs) \
                if len(summary) + 20 <= SUMMARY_LIMIT else summary
        lines = ["**Actionable pharmacogenomic results**", ""]
        for gene, interp, consultation in actionable:
            diplotype = f"{md_data(interp.diplotype)} " if interp.diplotype else ""
            lines.append(f"- **{md_text(gene)}** {diplotype}— {md_text(interp.phenotype)}")
            if consultation:
                lines.append(f"  - {md_text(consultation, indent='    ')}")
        if affected:
            lines += ["", "**Active medications affected**", ""]
            for drug_name, statements in affected:
                for s in statements:
                    if not s.policy:
                        continue
                    label = f" ({md_text(s.label)})" if s.label else ""
                    g = s.match.guideline
                    lines.append(f"- **{md_text(drug_name)}**{label}: {md_text(s.recommendation.recommendation, indent='  ')} "
                                 f"([{g.source}]({g.url}), {text.classification(s)})")
        shown_sources = sorted({s.match.guideline.source for _, ss in affected for s in ss} or {"CPIC"},
                               key=lambda x: SOURCE_ORDER.get(x, 9))
        lines += ["", f"Knowledge base version `{self.kb.version}`.", "", f"_{md_text(text.attribution(shown_sources))}_"]
        facts = [{"gene": g, "phenotype": i.phenotype, "lookup_key": i.lookup_key, "source_ids": list(i.source_ids)}
                 for g, i, _ in actionable]
        card = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": "\n".join(lines),
            "indicator": "warning" if affected else "info",
            "source": {"label": "CPIC via pgx-cds", "url": "https://cpicpgx.org/guidelines/",
                       "topic": {"system": TOPIC_SYSTEM, "code": "patient-summary", "display": "Pharmacogenomic summary"}},
        }
        if app_url:
            card["links"] = [self.smart_link(app_url, evaluation, evidence or {})]
        return [RenderedCard(card, "patient-summary", ", ".join(drugs), None, None, None, facts,
                             statements=[s for _, ss in affected for s in ss if s.policy])]
