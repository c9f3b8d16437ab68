"""Turn an evaluation into CDS Hooks 2.0 cards, applying the local policy in rules/.

One card per actionable drug–recommendation (never one per rule that merely matched): a card names the
drug, the gene result and the action in its summary, shows genotype, phenotype, recommendation,
classification, implications and the guideline in its detail, and offers one-click alternatives
where the rule's formulary has them. See rules/default.yaml for the default policy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from cds.ids import new_uuid
from cds.engine import DrugEvaluation, Evaluation, Match, PreTestAlert
from cds.genotype import Interpretation
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Adjustment, Guideline, Recommendation, Rule
from cds.sources import ATTRIBUTION as SOURCE_ATTRIBUTION
from cds.sources import INDICATOR_RANK, KINDS, disagreement, is_dpwg, kind, more_cautious, of_sources, rule_sources

SUMMARY_LIMIT = 139          # CDS Hooks: "<140-character summary"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OVERRIDE_SYSTEM = "urn:pgx-cds:override-reason"
OVERRIDE_REASONS = [
    {"system": OVERRIDE_SYSTEM, "code": "tolerated-before", "display": "Patient has taken this drug before without problems"},
    {"system": OVERRIDE_SYSTEM, "code": "will-monitor", "display": "Will monitor response or drug levels"},
    {"system": OVERRIDE_SYSTEM, "code": "result-disputed", "display": "Genotype result disputed or outdated"},
    {"system": OVERRIDE_SYSTEM, "code": "benefit-outweighs-risk", "display": "Benefit outweighs risk; no suitable alternative"},
    {"system": OVERRIDE_SYSTEM, "code": "not-applicable", "display": "Recommendation does not apply to this indication"},
]
TOPIC_SYSTEM = "urn:pgx-cds:rule"
ATTRIBUTION = ("CPIC guidelines (cpicpgx.org, CC0); PharmGKB/ClinPGx annotations (CC BY-SA 4.0). "
               "Decision support, not a substitute for clinical judgement.")


@dataclass(frozen=True)
class CardPolicy:
    indicator: str
    summary_template: str | None
    suggest_alternatives: bool


@dataclass
class RenderedCard:
    """A card plus what it rested on, for audit and tests."""

    card: dict[str, Any]
    rule_id: str
    drug: str
    guideline_id: str | None
    guideline_version: str | None
    recommendation_id: str | None
    facts: list[dict[str, Any]] = field(default_factory=list)   # gene, phenotype, lookup key, source ids
    pretest: bool = False
    sources: list[str] = field(default_factory=list)            # guideline sources the card rests on (CPIC, DPWG)

    @property
    def indicator(self) -> str:
        return self.card["indicator"]

    @property
    def uuid(self) -> str:
        return self.card["uuid"]


@dataclass
class OrderRef:
    """The draft order a card is about, so suggestions can replace it."""

    order_id: str | None = None              # "MedicationRequest/abc"
    resource: dict[str, Any] | None = None


def default_indicator(rec: Recommendation) -> str:
    flags = rec.flags
    if flags and flags.alternate_drug_available and rec.classification == "Strong":
        return "critical"
    if flags is None or flags.alternate_drug_available or flags.dosing_information or flags.other_prescribing_guidance:
        return "warning"
    return "info"


def is_actionable(rec: Recommendation) -> bool:
    """CPIC advises something other than "use as usual": a classification other than "No
    Recommendation" and a curator flag for dosing, an alternative drug or other guidance. A
    recommendation without flags counts as actionable (we would rather show than hide)."""
    if rec.classification == "No Recommendation" or (rec.classification is None and not is_dpwg(rec)):
        return False  # DPWG's advice is not graded in CPIC's terms: no classification is not "no advice"
    flags = rec.flags
    return flags is None or flags.dosing_information or flags.alternate_drug_available or flags.other_prescribing_guidance


class CardRenderer:
    """Built once at start-up with the knowledge base; renders cards per request."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._policies: dict[tuple[str, str], CardPolicy | None] = {}

    # --- policy ---------------------------------------------------------------------------------

    def _adjustment(self, rule: Rule, rec: Recommendation) -> Adjustment | None:
        for adj in rule.adjustments:
            if rec.id in adj.recommendations:
                return adj
            if adj.when and all(self._value_matches(gene, rec.lookup.get(gene), wanted) for gene, wanted in adj.when.items()):
                return adj
        return None

    def _value_matches(self, gene: str, value: str | None, wanted: list[str]) -> bool:
        if value is None:
            return False
        return value in wanted or self.kb.interpreters[gene].phenotype_of_key(value) in wanted

    def policy(self, rule: Rule, rec: Recommendation) -> CardPolicy | None:
        key = (rule.id, rec.id)
        if key not in self._policies:
            adj = self._adjustment(rule, rec)
            show = adj.card if adj and adj.card is not None else (rule.cards_for == "all" or is_actionable(rec))
            if not show:
                self._policies[key] = None
            else:
                suggest = adj.suggest_alternatives if adj and adj.suggest_alternatives is not None else \
                    bool(rule.alternatives) and (rec.flags is None or rec.flags.alternate_drug_available)
                self._policies[key] = CardPolicy(
                    indicator=(adj.indicator if adj and adj.indicator else None) or rule.indicator or default_indicator(rec),
                    summary_template=(adj.summary if adj and adj.summary else None) or rule.summary,
                    suggest_alternatives=suggest,
                )
        return self._policies[key]

    # --- order hooks --------------------------------------------------------------------------

    def order_cards(self, evaluation: Evaluation, hook: str, orders: dict[str, OrderRef] | None = None,
                    patient_ref: str | None = None, population: str | None = None,
                    age: int | None = None) -> list[RenderedCard]:
        """Cards for order-select / order-sign: one per actionable drug–recommendation, pre-test alerts."""
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
            shown: list[tuple[Match, CardPolicy | None]] = []
            for source in rule_sources(self.kb, rule):  # the site's choice: CPIC, DPWG or both
                for match in self._choose_population(replace(drug, matches=of_sources(drug.matches, [source])),
                                                     rule, population, age):
                    rec = match.recommendation
                    if any(rec.lookup.get(g) == NO_RESULT for g in pretest_genes):
                        continue  # the pre-test card already covers "no result on file"
                    shown.append((match, self.policy(rule, rec)))
            cards.extend(self.unreachable_notices(drug, rule, evaluation, shown))
            if len({m.guideline.source for m, _ in shown}) > 1 and any(p for _, p in shown):
                cards.append(self.sources_card(drug, shown, rule, evaluation, order, patient_ref))
                continue
            for match, policy in shown:
                if policy is not None:
                    cards.append(self._recommendation_card(drug, match, rule, policy, evaluation, order, patient_ref))
        return cards

    def _choose_population(self, drug: DrugEvaluation, rule: Rule, population: str | None, age: int | None) -> list[Match]:
        populations = {m.recommendation.population for m in drug.matches}
        for wanted in (population, rule.population, _age_population(age, populations)):
            if wanted and wanted in populations:
                return [m for m in drug.matches if m.recommendation.population == wanted]
        return list(drug.matches)

    def _results(self, evaluation: Evaluation, rec: Recommendation) -> tuple[list[str], list[dict[str, Any]]]:
        """Short gene results for the summary and facts for the detail and audit."""
        short, facts = [], []
        for gene, value in rec.lookup.items():
            if value == NO_RESULT:
                facts.append({"gene": gene, "phenotype": NO_RESULT, "lookup_key": value, "source_ids": []})
                continue
            interp = _interpretation_for(evaluation.interpretations.get(gene, []), value)
            interpreter = self.kb.interpreters[gene]
            if interpreter.kind == "allele-status":
                short.append(f"{gene}{value}")
                phenotype = value
            else:
                phenotype = interpreter.phenotype_of_key(value) if interp is None or interp.stated_as != "phenotype" else interp.phenotype
                short.append(f"{gene} {phenotype}")
            facts.append({
                "gene": gene, "phenotype": phenotype, "lookup_key": value,
                "diplotype": interp.diplotype if interp else None,
                "activity_score": interp.activity_score if interp else None,
                "source_ids": list(interp.source_ids) if interp else [],
            })
        return short, facts

    def _recommendation_card(self, drug: DrugEvaluation, match: Match, rule: Rule, policy: CardPolicy,
                             evaluation: Evaluation, order: OrderRef, patient_ref: str | None) -> RenderedCard:
        rec, guideline = match.recommendation, match.guideline
        short, facts = self._results(evaluation, rec)
        results = "; ".join(short) or "no result on file"
        action = _first_sentence(rec.recommendation)
        template = policy.summary_template or "{Drug}: {results} — {action}"
        summary = _fit(template.format(Drug=drug.drug.capitalize(), drug=drug.drug, results=results, action=action,
                                       population=rec.population, classification=rec.classification or ""))
        detail = self._detail(drug, match, rule, facts)
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": detail,
            "indicator": policy.indicator,
            "source": self._source(guideline, rule),
            "links": [{"label": f"{guideline.source} guideline: {guideline.name.removeprefix(guideline.source + ' Guideline for ')}",
                       "url": guideline.url, "type": "absolute"}],
            "overrideReasons": OVERRIDE_REASONS,
        }
        if guideline.annotation_url and guideline.annotation_url != guideline.url:
            card["links"].append({"label": "PharmGKB guideline annotation", "url": guideline.annotation_url, "type": "absolute"})
        if policy.suggest_alternatives and rule.alternatives:
            card["suggestions"] = [self._replace_suggestion(drug, alt, order, patient_ref) for alt in rule.alternatives]
            card["selectionBehavior"] = "at-most-one"
        return RenderedCard(card, rule.id, drug.drug, guideline.id, guideline.version, rec.id, facts,
                            sources=[guideline.source])

    def _detail(self, drug: DrugEvaluation, match: Match, rule: Rule, facts: list[dict[str, Any]]) -> str:
        rec, guideline = match.recommendation, match.guideline
        lines = ["**Pharmacogenomic result**", ""]
        for f in facts:
            if f["phenotype"] == NO_RESULT:
                lines.append(f"- {f['gene']}: no result on file")
                continue
            parts = [f"- {f['gene']}"]
            if f.get("diplotype"):
                parts.append(f"`{f['diplotype']}`")
            parts.append(f"— **{_md(f['phenotype'])}**")
            if f.get("activity_score") and f["activity_score"] != f["phenotype"]:
                parts.append(f"(activity score {f['activity_score']})")
            if f.get("source_ids"):
                parts.append(f"[{', '.join(f['source_ids'])}]")
            lines.append(" ".join(parts))
        lines += ["", f"**Recommendation** ({guideline.source}, classification: {_classification_label(rec, guideline)}; "
                      f"population: {rec.population})", "", rec.recommendation]
        if rec.implications:
            lines += ["", "**Implications**", ""]
            lines += [f"- {gene}: {text}" for gene, text in rec.implications.items()]
        if rec.comments:
            lines += ["", f"*Other considerations:* {rec.comments}"]
        if match.matched_by == "phenotype":
            lines += ["", "*Matched by the reported phenotype: every activity score of this phenotype has this recommendation.*"
                      if match.score is None else f"*{guideline.source}'s advice if the {match.score_gene} activity score is {match.score}: the reported phenotype alone does not say which applies.*"]
        lines += ["", f"**Guideline:** {citation_markdown(guideline)}",
                  f"Recommendation `{rec.id}` from {rec.source}. Guideline version: {guideline.version}.",
                  f"Rule `{rule.id}`; knowledge base version `{self.kb.version}`.", "", f"_{_attribution([guideline.source])}_"]
        return "\n".join(lines)

    def sources_card(self, drug: DrugEvaluation, shown: list[tuple[Match, CardPolicy | None]], rule: Rule,
                     evaluation: Evaluation, order: OrderRef, patient_ref: str | None) -> RenderedCard:
        """One card for a drug on which the site shows several sources (CPIC and DPWG): each source's advice
        as a labelled statement (source, classification, citation); when their kinds differ (curator
        flags), the first line of the detail says so and the indicator follows the more cautious."""
        kinds: dict[str, str] = {}
        for match, policy in shown:
            source = match.guideline.source
            k = kind(match.recommendation, policy is not None)
            if KINDS[k][0] >= KINDS[kinds.get(source, "none")][0]:
                kinds[source] = k
        lead_match, lead_policy = max(
            ((m, p) for m, p in shown if p is not None),
            key=lambda mp: (INDICATOR_RANK[mp[1].indicator], KINDS[kind(mp[0].recommendation)][0],
                            mp[0].guideline.source == "CPIC"))  # the most cautious; CPIC on a tie
        indicator = lead_policy.indicator
        for _, policy in shown:
            if policy is not None:
                indicator = more_cautious(indicator, policy.indicator)
        facts: list[dict[str, Any]] = []
        short: list[str] = []
        for match, _ in shown:
            s, f = self._results(evaluation, match.recommendation)
            short += [x for x in s if x not in short]
            facts += [x for x in f if (x["gene"], x["lookup_key"]) not in {(y["gene"], y["lookup_key"]) for y in facts}]
        rec = lead_match.recommendation
        template = lead_policy.summary_template or "{Drug}: {results} — {action}"
        summary = _fit(template.format(Drug=drug.drug.capitalize(), drug=drug.drug, results="; ".join(short) or "no result on file",
                                       action=_first_sentence(rec.recommendation), population=rec.population,
                                       classification=rec.classification or ""))
        sources = sorted({m.guideline.source for m, _ in shown}, key=["CPIC", "DPWG"].index)
        lines: list[str] = []
        differ = disagreement(kinds)
        if differ:
            lines += [f"**{' and '.join(sources)} disagree in kind** — {differ}. The indicator follows the more cautious "
                      "advice.", ""]
        else:
            lines += [f"**{' and '.join(sources)} agree in kind** — {KINDS[next(iter(kinds.values()))][1]}.", ""]
        lines += ["**Pharmacogenomic result**", ""]
        lines += self._fact_lines(facts)
        for match, policy in shown:
            r, g = match.recommendation, match.guideline
            lines += ["", f"**{g.source}** (classification: {_classification_label(r, g)}; population: {r.population}"
                          f"{'' if policy else '; raises no card on its own'})", "", r.recommendation]
            for gene, text in r.implications.items():
                lines += ["", f"*Implications ({gene}):* {text}"]
            if r.comments:
                lines += ["", f"*Other considerations:* {r.comments}"]
            if match.matched_by == "phenotype":
                lines += ["", "*Matched by the reported phenotype: every activity score of this phenotype has this recommendation.*"
                          if match.score is None else f"*{g.source}'s advice if the {match.score_gene} activity score is "
                          f"{match.score}: the reported phenotype alone does not say which applies.*"]
            lines += ["", f"*{g.source} guideline:* {citation_markdown(g)} Recommendation `{r.id}` from {r.source}. "
                          f"Guideline version: {g.version}."]
        lines += ["", f"Rule `{rule.id}`; knowledge base version `{self.kb.version}`.", "", f"_{_attribution(sources)}_"]
        guideline = lead_match.guideline
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": "\n".join(lines),
            "indicator": indicator,
            "source": {**self._source(guideline, rule), "label": " and ".join(sources) + " via pgx-cds"
                       + (" (DPWG: PharmGKB/ClinPGx, CC BY-SA 4.0)" if "DPWG" in sources else "")},
            "links": [],
            "overrideReasons": OVERRIDE_REASONS,
        }
        for g in {id(m.guideline): m.guideline for m, _ in shown}.values():
            card["links"].append({"label": f"{g.source} guideline: {g.name.removeprefix(g.source + ' Guideline for ')}",
                                  "url": g.url, "type": "absolute"})
        suggest = any(p.suggest_alternatives for _, p in shown if p is not None)
        if suggest and rule.alternatives:
            card["suggestions"] = [self._replace_suggestion(drug, alt, order, patient_ref) for alt in rule.alternatives]
            card["selectionBehavior"] = "at-most-one"
        ids = [m.guideline.id for m, _ in shown]
        return RenderedCard(card, rule.id, drug.drug, " + ".join(dict.fromkeys(ids)),
                            " + ".join(dict.fromkeys(m.guideline.version for m, _ in shown)),
                            " + ".join(m.recommendation.id for m, _ in shown), facts, sources=sources)

    def _fact_lines(self, facts: list[dict[str, Any]]) -> list[str]:
        lines = []
        for f in facts:
            if f["phenotype"] == NO_RESULT:
                lines.append(f"- {f['gene']}: no result on file")
                continue
            parts = [f"- {f['gene']}"]
            if f.get("diplotype"):
                parts.append(f"`{f['diplotype']}`")
            parts.append(f"— **{_md(f['phenotype'])}**")
            if f.get("activity_score") and f["activity_score"] != f["phenotype"]:
                parts.append(f"(activity score {f['activity_score']})")
            if f.get("source_ids"):
                parts.append(f"[{', '.join(f['source_ids'])}]")
            lines.append(" ".join(parts))
        return lines

    def _source(self, guideline, rule: Rule) -> dict[str, Any]:
        return {
            "label": f"{guideline.source} via pgx-cds" + (" (PharmGKB/ClinPGx, CC BY-SA 4.0)" if guideline.source == "DPWG" else ""),
            "url": guideline.url,
            "topic": {"system": TOPIC_SYSTEM, "code": rule.id, "display": rule.title},
        }

    def _replace_suggestion(self, drug: DrugEvaluation, alt, order: OrderRef, patient_ref: str | None) -> dict[str, Any]:
        actions = []
        if order.order_id:
            actions.append({"type": "delete", "description": f"Remove the draft order for {drug.drug}",
                            "resourceId": order.order_id})
        actions.append({"type": "create", "description": f"Create a draft order for {alt.name}",
                        "resource": replacement_request(order.resource, alt.name, alt.rxnorm, patient_ref)})
        return {"label": f"Replace {drug.drug} with {alt.name}", "uuid": new_uuid(), "actions": actions}

    def _pretest_card(self, drug: DrugEvaluation, alert: PreTestAlert, order: OrderRef, patient_ref: str | None) -> RenderedCard:
        pre = alert.rule.pretest
        assert pre is not None
        test = pre.test_display or f"{alert.gene} genotyping"
        template = pre.summary or "{Drug}: no {gene} result on file — order {test} before prescribing"
        summary = _fit(template.format(Drug=drug.drug.capitalize(), drug=drug.drug, gene=alert.gene, test=test))
        guideline = next((g for g in self.kb.drugs().get(drug.drug, []) if alert.gene in g.genes), None)
        detail_lines = [f"No {alert.gene} result is on file for this patient. The drug label requires (or CPIC "
                        f"recommends) {alert.gene} testing before {drug.drug} is prescribed.", ""]
        if guideline:
            detail_lines.append(f"**Guideline:** [{guideline.name}]({guideline.url}).")
        detail_lines += [f"Rule `{alert.rule.id}`; knowledge base version `{self.kb.version}`.", "", f"_{ATTRIBUTION}_"]
        service_request = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "code": {"text": test},
            "subject": {"reference": _subject(order.resource, patient_ref)},
        }
        card = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": "\n".join(detail_lines),
            "indicator": pre.indicator,
            "source": self._source(guideline, alert.rule) if guideline else {"label": "pgx-cds local policy"},
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

    def unreachable_notices(self, drug: DrugEvaluation, rule: Rule, evaluation: Evaluation,
                            shown: list[tuple[Match, CardPolicy | None]]) -> list[RenderedCard]:
        """Silence is a statement: when a selected guideline has advice for a gene the patient has a result
        for, but keys it in a way our gene tables cannot reach (e.g. DPWG's genotype-keyed CYP2C9 advice for
        a CYP2C9 diplotype) and none of its recommendations matched, say so instead of showing nothing."""
        out = []
        selected = set(rule_sources(self.kb, rule))
        matched = {m.guideline.id for m in drug.matches}
        for g in self.kb.drugs().get(drug.drug, []):
            if g.source not in selected or g.id in matched:
                continue
            keys = [u for u in g.unreachable if u.drug == drug.drug]
            genes = [gene for gene in g.genes if any(not i.indeterminate for i in evaluation.interpretations.get(gene, []))
                     and any(gene in u.source_key for u in keys)]
            if not genes:
                continue
            results = "; ".join(f"{gene} {i.diplotype or i.phenotype}" for gene in genes for i in evaluation.interpretations[gene][:1])
            reasons = sorted({u.reason for u in keys if any(gene in u.source_key for gene in genes)})
            detail = (f"The {g.source} guideline [{g.name}]({g.url}) has advice for {drug.drug} by {', '.join(genes)}, "
                      f"but none of it could be matched to this result ({_md(results)}): some of its recommendations "
                      "are keyed in a way our gene tables cannot produce:\n\n" + "\n".join(f"- {_md(r)}" for r in reasons)
                      + f"\n\nRead the guideline before prescribing. Rule `{rule.id}`.")
            out.append(self.notice_card(drug.drug, f"{drug.drug.capitalize()}: {results} — {g.source} advice could not be "
                                                   "matched to this result; see the guideline", detail,
                                        f"{g.source.lower()}-key-unreachable", indicator="info"))
        return out

    def notice_card(self, drug: str, summary: str, detail: str, code: str, indicator: str = "warning") -> RenderedCard:
        """A card about the check itself (results conflict, results unreachable), not about a guideline."""
        card = {
            "uuid": new_uuid(),
            "summary": _fit(summary),
            "detail": f"{detail}\n\nKnowledge base version `{self.kb.version}`.",
            "indicator": indicator,
            "source": {"label": "pgx-cds", "topic": {"system": TOPIC_SYSTEM, "code": code, "display": code.replace("-", " ")}},
        }
        return RenderedCard(card, code, drug, None, None, None, [])

    # --- patient-view -----------------------------------------------------------------------------

    def patient_summary(self, interpretations: dict[str, list[Interpretation]], evaluation: Evaluation | None,
                        hook: str = "patient-view") -> list[RenderedCard]:
        """One card: the patient's actionable results (CPIC EHR priority) and the active drugs they affect."""
        actionable: list[tuple[str, Interpretation, str | None]] = []
        for gene, items in sorted(interpretations.items()):
            table = self.kb.genes.get(gene)
            for interp in items:
                for key in interp.lookup.values():
                    text = next((r for r in (table.results if table else []) if r.result == key), None)
                    if text and text.priority and "high risk" in text.priority.lower():
                        actionable.append((gene, interp, text.consultation))
                        break
        affected: list[tuple[str, Match]] = []
        for drug in (evaluation.drugs if evaluation else []):
            rule = drug.rules.get(hook) or drug.rules.get("order-sign")
            if rule is None:
                continue
            for match in of_sources(self._choose_population(drug, rule, None, None), rule_sources(self.kb, rule)):
                if self.policy(rule, match.recommendation):
                    affected.append((drug.drug, match))
        if not actionable and not affected:
            return []
        names = [f"{g}{i.phenotype}" if self.kb.interpreters[g].kind == "allele-status" else f"{g} {i.phenotype}"
                 for g, i, _ in actionable]
        summary = "Pharmacogenomic results to act on: " + ", ".join(names) if names else "Active medications affected by pharmacogenomic results"
        if affected:
            summary += f"; affects {', '.join(sorted({d for d, _ in affected}))}"
        lines = ["**Actionable pharmacogenomic results**", ""]
        for gene, interp, consultation in actionable:
            lines.append(f"- **{gene}** {('`' + interp.diplotype + '` ') if interp.diplotype else ''}— {_md(interp.phenotype)}")
            if consultation:
                lines.append(f"  - {consultation}")
        if affected:
            lines += ["", "**Active medications affected**", ""]
            for drug, match in affected:
                lines.append(f"- **{drug}**: {match.recommendation.recommendation} "
                             f"([{match.guideline.source}]({match.guideline.url}), {_classification_label(match.recommendation, match.guideline)})")
        lines += ["", f"Knowledge base version `{self.kb.version}`.", "", f"_{ATTRIBUTION}_"]
        facts = [{"gene": g, "phenotype": i.phenotype, "lookup_key": i.lookup_key, "source_ids": list(i.source_ids)}
                 for g, i, _ in actionable]
        card = {
            "uuid": new_uuid(),
            "summary": _fit(summary),
            "detail": "\n".join(lines),
            "indicator": "warning" if affected else "info",
            "source": {"label": "CPIC via pgx-cds", "url": "https://cpicpgx.org/guidelines/",
                       "topic": {"system": TOPIC_SYSTEM, "code": "patient-summary", "display": "Pharmacogenomic summary"}},
        }
        return [RenderedCard(card, "patient-summary", ", ".join(sorted({d for d, _ in affected})), None, None, None, facts)]


def citation_markdown(guideline: Guideline) -> str:
    """The guideline and its newest publication, or the PharmGKB annotation when it lists none (some DPWG)."""
    if not guideline.citations:
        if guideline.source == "DPWG":
            return f"[{guideline.name}]({guideline.url}) — PharmGKB/ClinPGx guideline annotation (it lists no publication)."
        return f"[{guideline.name}]({guideline.url}) — no PMID in the source release."
    return f"[{guideline.name}]({guideline.url}) — {guideline.citations[0].text()}."


def _classification_label(rec: Recommendation, guideline: Guideline) -> str:
    if rec.classification:
        return rec.classification
    return "not graded (N/A in the PharmGKB export)" if guideline.source == "DPWG" else "none"


def _attribution(sources: list[str]) -> str:
    names = "; ".join(SOURCE_ATTRIBUTION.get(s, s) for s in sources)
    return f"{names}; PharmGKB/ClinPGx annotations (CC BY-SA 4.0). Decision support, not a substitute for clinical judgement."


def replacement_request(draft: dict[str, Any] | None, name: str, rxnorm: str, patient_ref: str | None) -> dict[str, Any]:
    """A draft MedicationRequest for an alternative ingredient, keeping the draft's subject and intent."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": (draft or {}).get("intent") or "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name},
        "subject": {"reference": _subject(draft, patient_ref)},
    }
    if isinstance((draft or {}).get("encounter"), dict):
        resource["encounter"] = draft["encounter"]
    return resource


def _subject(draft: dict[str, Any] | None, patient_ref: str | None) -> str:
    subject = (draft or {}).get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("reference"), str):
        return subject["reference"]
    return patient_ref or "Patient/unknown"


def _interpretation_for(items: list[Interpretation], value: str) -> Interpretation | None:
    for interp in items:
        if value in interp.lookup.values():
            return interp
    return items[0] if items else None


def _age_population(age: int | None, populations: set[str]) -> str | None:
    if age is None:
        return None
    if age >= 18 and "adults" in populations:
        return "adults"
    if age < 18 and "pediatrics" in populations:
        return "pediatrics"
    return None


def _md(text: str) -> str:
    """Escape Markdown emphasis characters in data ('*57:01 positive' must not start italics)."""
    return re.sub(r"([*_`\\])", r"\\\1", text)


_SENTENCE = re.compile(r"(?<=[.;])\s")


def _first_sentence(text: str) -> str:
    return _SENTENCE.split(text.strip(), maxsplit=1)[0].rstrip(".;")


def _fit(text: str, limit: int = SUMMARY_LIMIT) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—- ")
    return cut + "…"
