"""Turn an evaluation into CDS Hooks 2.0 cards, applying the local policy in rules/.

One card per drug and governing rule. A card carries one or more *statements*: the CPIC
recommendation for the patient, or several labelled ones when several apply and the request does not
say which (the drug's populations — clopidogrel ACS/PCI vs. neurovascular, voriconazole adults vs.
children without a birth date —, or the activity scores a phenotype-only result may have). Its
indicator is the most cautious of its statements.

What a clinician sees is written for any CommonMark client: every text we did not write (CPIC's
wording, anything from the request) is escaped (cds.mdescape); the summary is never cut (≤139
characters: drug, result, action); the detail is short (result with date and lab, the advice,
classification, guideline and versions) and the long form is the SMART summary page behind the card's
`smart` link. Suggestions put `create` before `delete`, because clients such as the CDS Hooks sandbox
stop applying a suggestion at its first `delete`. See rules/default.yaml for the default policy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import orjson

from cds.engine import DrugEvaluation, Evaluation, Match, PreTestAlert
from cds.facts import GenomicResult
from cds.genotype import Interpretation
from cds.ids import new_uuid
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Adjustment, Alternative, Flags, Guideline, Recommendation, Rule
from cds.mdescape import md_data, md_text
from cds.memo import Memo
from cds.populations import GENERAL, population_dimension, population_words
from cds.sources import ATTRIBUTION as SOURCE_ATTRIBUTION
from cds.sources import KINDS, SOURCE_ORDER, disagreement, is_dpwg, kind, of_sources, rule_sources

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
SMART_LINK_LABEL = "Open pharmacogenomic summary"
DETAIL_WORD_BUDGET = 120     # the detail's common case stays under this many words
_CAUTION = {"info": 0, "warning": 1, "critical": 2}

# Action words when CPIC's own first sentence does not fit the summary: derived from the curators'
# flags only, so they say no more than the flags do; the detail has CPIC's words.
_FLAG_ACTIONS = {
    (True, True): "change of drug or dose advised",
    (True, False): "alternative drug advised",
    (False, True): "dosing advice",
    (False, False): "prescribing advice",
}
GENERIC_ACTIONS = frozenset(_FLAG_ACTIONS.values())


@dataclass(frozen=True)
class CardPolicy:
    indicator: str
    summary_template: str | None
    suggest_alternatives: bool


@dataclass(frozen=True)
class Statement:
    """One recommendation on a card with what tells it apart from the card's other statements. The
    label is built from parts so that a further part (e.g. the source, once DPWG sits beside CPIC)
    can be added without changing how the others read."""

    match: Match
    policy: CardPolicy | None                # None: shown for completeness, raises no card by itself
    population: str | None = None            # CPIC population code, when the card has several
    score: str | None = None                 # the activity score this statement is for
    score_gene: str | None = None            # whose activity score
    source: str | None = None                # "CPIC", "DPWG": when the card has several sources

    @property
    def recommendation(self) -> Recommendation:
        return self.match.recommendation

    def label_parts(self) -> list[str]:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.population:
            parts.append(population_words(self.population))
        if self.score is not None:
            gene = f"{self.score_gene} " if self.score_gene else ""
            parts.append(f"if the {gene}activity score is {self.score}")
        return parts

    @property
    def label(self) -> str:
        return " · ".join(self.label_parts())


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
    statements: list[Statement] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)            # guideline sources the card rests on (CPIC, DPWG)

    @property
    def indicator(self) -> str:
        return self.card["indicator"]

    @property
    def uuid(self) -> str:
        return self.card["uuid"]

    @property
    def recommendation_ids(self) -> list[str]:
        return [s.recommendation.id for s in self.statements]


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


def is_actionable(rec: Recommendation, kb: KnowledgeBase | None = None) -> bool:
    """CPIC advises something other than "use as usual": a classification other than "No
    Recommendation" and a curator flag for dosing, an alternative drug or other guidance.

    The recommendations CPIC's release has but PharmGKB's curators never annotated carry no flags
    (e.g. the G6PD drugs of 2024, metoprolol). For those, CPIC's own EHR priority of the gene results
    they rest on decides (cpic_gene_results_cds): a card when one of them is a priority result
    ("Abnormal/Priority/High Risk"), none for results CPIC files as routine ("Normal Risk": G6PD
    Normal's "No reason to avoid based on G6PD status"). Where no gene of the recommendation has a
    CPIC result text to ask, it counts as actionable (we would rather show than hide)."""
    if rec.classification == "No Recommendation" or (rec.classification is None and not is_dpwg(rec)):
        return False  # DPWG's advice is not graded in CPIC's terms: no classification is not "no advice"
    flags = rec.flags
    if flags is not None:
        return flags.dosing_information or flags.alternate_drug_available or flags.other_prescribing_guidance
    texts = [kb.genes[gene].result_text(value) for gene, value in rec.lookup.items() if kb and gene in kb.genes]
    texts = [t for t in texts if t is not None]
    return not texts or any(t.is_priority for t in texts)


def most_cautious(indicators: Iterable[str]) -> str:
    return max(indicators, key=lambda i: _CAUTION.get(i, 0), default="info")


class CardRenderer:
    """Built once at start-up with the knowledge base (and the engine, to look up the patient's
    recommendation for a suggested alternative drug); renders cards per request."""

    def __init__(self, kb: KnowledgeBase, engine: Any = None):
        self.kb = kb
        self.engine = engine
        self._policies: dict[tuple[str, str], CardPolicy | None] = {}
        # What a card says that rests on the knowledge alone, rendered once per combination: a summary
        # per (drug, statements, short results), the knowledge part of a detail per (statements, rule),
        # the dose sentences per (alternatives, interpreted results). The knowledge never changes under
        # a renderer, so a remembered text cannot go stale; each table is bounded.
        self._summaries: Memo[str] = Memo(_MEMO_ENTRIES)
        self._details: Memo[_DetailParts] = Memo(_MEMO_ENTRIES)
        self._doses: Memo[dict[str, str | None]] = Memo(_MEMO_ENTRIES)
        # Knowledge alone, as large as the knowledge: each rule's sources (rule_sources scans every rule
        # for the site default), and each guideline's unreachable keys for a drug with the genes they name.
        self._sources: Memo[tuple[str, ...]] = Memo(_MEMO_ENTRIES)
        self._unreachable: Memo[tuple[list, tuple[str, ...]]] = Memo(_MEMO_ENTRIES)

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
            show = adj.card if adj and adj.card is not None else (rule.cards_for == "all" or is_actionable(rec, self.kb))
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
            matches: list[Match] = []
            for source in self._rule_sources(rule):  # the site's choice: CPIC, DPWG or both
                # populations are chosen per source: DPWG's advice has none, so CPIC's choice must not hide it
                chosen = self._choose_population(replace(drug, matches=of_sources(drug.matches, [source])),
                                                 rule, population, age)
                matches += [m for m in chosen if not any(m.recommendation.lookup.get(g) == NO_RESULT for g in pretest_genes)]
            statements = self.statements(rule, matches)
            cards.extend(self.unreachable_notices(drug, rule, evaluation, statements))
            if any(s.policy for s in statements):
                cards.append(self._recommendation_card(drug, statements, rule, evaluation, order, patient_ref,
                                                       evidence or {}, app_url))
        return cards

    def statements(self, rule: Rule, matches: list[Match]) -> list[Statement]:
        """The labelled statements of one card: a part of the label only where the statements differ."""
        sources = {m.guideline.source for m in matches}
        populations = {source: {m.recommendation.population for m in matches if m.guideline.source == source}
                       for source in sources}
        out = []
        for m in matches:
            pop = m.recommendation.population
            out.append(Statement(
                m, self.policy(rule, m.recommendation),
                # a population is named where it is not "general", or where one source has several
                population=pop if pop != GENERAL or len(populations[m.guideline.source]) > 1 else None,
                score=m.score, score_gene=m.score_gene, source=m.guideline.source if len(sources) > 1 else None))
        return out

    def _choose_population(self, drug: DrugEvaluation, rule: Rule, population: str | None, age: int | None) -> list[Match]:
        populations = {m.recommendation.population for m in drug.matches}
        for wanted in (population, rule.population, _age_population(age, populations)):
            if wanted and wanted in populations:
                return [m for m in drug.matches if m.recommendation.population == wanted]
        return list(drug.matches)

    def _results(self, evaluation: Evaluation, statements: list[Statement],
                 evidence: Mapping[str, GenomicResult]) -> tuple[list[str], list[dict[str, Any]]]:
        """Short gene results for the summary and facts for the detail and audit (one per gene and
        lookup value; a phenotype-only result with several possible scores gives one per score)."""
        short: list[str] = []
        facts: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for statement in statements:
            for gene, value in statement.recommendation.lookup.items():
                if (gene, value) in seen:
                    continue
                seen.add((gene, value))
                if value == NO_RESULT:
                    facts.append({"gene": gene, "phenotype": NO_RESULT, "lookup_key": value, "source_ids": []})
                    continue
                interp = _interpretation_for(evaluation.interpretations.get(gene, []), value)
                interpreter = self.kb.interpreters[gene]
                if interpreter.kind == "allele-status":
                    text, phenotype = f"{gene}{value}", value
                else:
                    phenotype = interpreter.phenotype_of_key(value) if interp is None or interp.stated_as != "phenotype" else interp.phenotype
                    text = f"{gene} {phenotype}"
                if text not in short:
                    short.append(text)
                sources = list(interp.source_ids) if interp else []
                result = next((evidence[s] for s in sources if s in evidence), None)
                facts.append({
                    "gene": gene, "phenotype": phenotype, "lookup_key": value,
                    "diplotype": interp.diplotype if interp else None,
                    "activity_score": interp.activity_score if interp else None,
                    "stated_as": interp.stated_as if interp else None,
                    "source_ids": sources,
                    "date": result.effective.date().isoformat() if result and result.effective else None,
                    "lab": getattr(result, "performer", None) if result else None,
                })
        return short, facts

    def _recommendation_card(self, drug: DrugEvaluation, statements: list[Statement], rule: Rule,
                             evaluation: Evaluation, order: OrderRef, patient_ref: str | None,
                             evidence: Mapping[str, GenomicResult], app_url: str | None) -> RenderedCard:
        carded = [s for s in statements if s.policy]
        first = carded[0]
        guidelines = list({s.match.guideline.id: s.match.guideline for s in statements}.values())
        sources = sorted({g.source for g in guidelines}, key=lambda x: SOURCE_ORDER.get(x, 9))
        short, facts = self._results(evaluation, statements, evidence)
        keys = tuple(_statement_key(s) for s in statements)
        summary = self._summaries.get((drug.drug, keys, tuple(short)), lambda: self._summary(drug, statements, short))
        card: dict[str, Any] = {
            "uuid": new_uuid(),
            "summary": summary,
            "detail": self._detail(statements, rule, facts, app_url is not None, keys),
            "indicator": most_cautious(s.policy.indicator for s in carded),
            "source": self._source(first.match.guideline, rule, sources),
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
            differs = _differs_by(statements) or ""
            by_population = any(d not in ("activity score", "source") for d in differs.split(" and ") if d)
            whose = population_words(suggesting[0].population) if by_population and suggesting[0].population else None
            doses = self.dose_advices(evaluation, [alt.name for alt in rule.alternatives])
            card["suggestions"] = [self._replace_suggestion(drug, alt, order, patient_ref, doses[alt.name], whose)
                                   for alt in rule.alternatives]
            card["selectionBehavior"] = "at-most-one"
        if len(guidelines) > 1:   # the audit records every guideline and recommendation the card rests on
            ids = (" + ".join(g.id for g in guidelines), " + ".join(dict.fromkeys(g.version for g in guidelines)),
                   " + ".join(s.recommendation.id for s in statements))
        else:
            ids = (first.match.guideline.id, first.match.guideline.version, first.recommendation.id)
        return RenderedCard(card, rule.id, drug.drug, *ids, facts, statements=statements, sources=sources)

    # --- summary ------------------------------------------------------------------------------

    def _summary(self, drug: DrugEvaluation, statements: list[Statement], short: list[str]) -> str:
        carded = [s for s in statements if s.policy]
        results = "; ".join(short) or "no result on file"
        Drug = drug.drug.capitalize()
        differs = _differs_by(statements)
        # what the statements differ by besides the source (population, activity score)
        within = " and ".join(d for d in (differs or "").split(" and ") if d and d != "source")
        candidates: list[str] = []
        if not within:
            # one statement, or one per source: the most cautious one leads (CPIC on a tie), in the
            # site's wording when its rule has a summary, else in its source's first sentence
            lead = max(carded, key=lambda s: (_CAUTION.get(s.policy.indicator, 0), KINDS[kind(s.recommendation)][0],
                                              -SOURCE_ORDER.get(s.match.guideline.source, 9)))
            rec = lead.recommendation
            if lead.policy.summary_template:
                text = " ".join(lead.policy.summary_template.format(
                    Drug=Drug, drug=drug.drug, results=results, action=_first_sentence(rec.recommendation),
                    population=rec.population, classification=rec.classification or "").split())
                if len(text) <= SUMMARY_LIMIT:
                    return text
            whose = f"{lead.match.guideline.source}: " if differs else ""
            sentence = _first_sentence(rec.recommendation)
            candidates.append(whose + sentence)
            step = _leading_step(sentence)
            if step:
                candidates.append(f"{whose}{step} — see detail")
        else:
            # CPIC's first sentence when it holds for every statement on the card; with the statements'
            # difference named when it holds for those that raise the card.
            every = {_first_sentence(s.recommendation.recommendation) for s in statements}
            raising = {_first_sentence(s.recommendation.recommendation) for s in carded}
            if len(every) == 1:
                sentence = every.pop()
                candidates.append(sentence)
                step = _leading_step(sentence)
                if step:
                    candidates.append(f"{step} — see detail")
            elif len(raising) == 1:
                sentence = raising.pop()
                candidates.append(f"{sentence}; differs by {within} — see detail")
                step = _leading_step(sentence)
                if step:
                    candidates.append(f"{step}; differs by {within} — see detail")
        generic = _flag_action([s.recommendation.flags for s in carded])
        if within:
            candidates.append(f"{generic}; differs by {within} — see detail")
        candidates.append(f"{generic} — see detail")
        for action in candidates:
            for head in (f"{Drug}: {results}", f"{Drug}: {short[0]}" if short else f"{Drug}: {results}"):
                text = f"{head} — {action}"
                if len(text) <= SUMMARY_LIMIT:
                    return text
        return f"{Drug}: {short[0] if short else results}"[:SUMMARY_LIMIT - len(" — see detail")] + " — see detail"

    # --- detail -------------------------------------------------------------------------------

    def _detail(self, statements: list[Statement], rule: Rule, facts: list[dict[str, Any]], has_app: bool,
                keys: tuple | None = None) -> str:
        """The detail: how the sources compare, one line per result, the advice, its citation, the
        implications when the whole stays within DETAIL_WORD_BUDGET words, and the pointer onward."""
        key = (keys if keys is not None else tuple(_statement_key(s) for s in statements), rule.id, has_app)
        parts = self._details.get(key, lambda: self._detail_parts(statements, rule, has_app))
        results = list(dict.fromkeys(_result_line(f) for f in facts))   # one line per result, however many scores
        lines = parts.head + results + [""] + parts.advice
        if parts.implications is not None and parts.words + sum(map(_words, results)) <= DETAIL_WORD_BUDGET:
            return "\n".join(lines + ["", parts.implications] + parts.tail)
        return "\n".join(lines + parts.tail)

    def _detail_parts(self, statements: list[Statement], rule: Rule, has_app: bool) -> "_DetailParts":
        """The parts of a detail that rest on the knowledge alone (everything but the result lines)."""
        head: list[str] = []
        differs = _differs_by(statements)
        sources = sorted({s.match.guideline.source for s in statements}, key=lambda x: SOURCE_ORDER.get(x, 9))
        if len(sources) > 1:
            # how the sources compare, from the curators' flags (cds.sources), before their words
            kinds: dict[str, str] = {}
            for s in statements:
                k = kind(s.recommendation, s.policy is not None)
                if KINDS[k][0] >= KINDS[kinds.get(s.match.guideline.source, "none")][0]:
                    kinds[s.match.guideline.source] = k
            differ = disagreement(kinds)
            head += [f"**{' and '.join(sources)} disagree in kind** — {differ}. The indicator follows the more "
                     "cautious advice." if differ else
                     f"**{' and '.join(sources)} agree in kind** — {KINDS[next(iter(kinds.values()))][1]}.", ""]
        lines: list[str] = []
        if len(statements) == 1:
            s = statements[0]
            rec = s.recommendation
            label = f" · {md_text(s.label)}" if s.label else ""
            lines += [f"**{s.match.guideline.source} advice** · classification: {_classification(s)}{label}", "",
                      md_text(rec.recommendation, line_start=True)]
        else:
            also = " and ".join(d for d in differs.split(" and ") if d not in ("activity score", "source"))
            if differs.startswith("activity score"):
                lines.append("**The activity score decides** — the result gives the phenotype only, and the advice "
                             "differs by score (most cautious first)" +
                             (f"; it also differs by {also}, which the request does not say:" if also else ":"))
            elif also:
                lines.append(f"**The advice differs by {also}** — the request does not say which applies:")
            else:
                lines.append("**Each source's advice:**")
            lines.append("")
            for s in statements:
                rec = s.recommendation
                lines.append(f"- **{md_text(s.label)}** (classification: {_classification(s)}): "
                             f"{md_text(rec.recommendation, indent='  ')}")
        if len(statements) == 1 and statements[0].match.matched_by == "phenotype" and statements[0].score is None:
            lines += ["", "_Matched by the reported phenotype: every activity score of this phenotype has this advice._"]
        guidelines = list({s.match.guideline.id: s.match.guideline for s in statements}.values())
        lines += ["", ". ".join(f"{md_text(g.name)}: {_cited(g)}; {md_text(g.version)}" for g in guidelines) + ". "
                      f"{'Recommendations' if len(statements) > 1 else 'Recommendation'} "
                      f"{', '.join(f'`{s.recommendation.id}`' for s in statements)}; rule `{rule.id}`; "
                      f"knowledge base `{self.kb.version}`."]
        implications = self._implications(statements)
        pointer = ("Implications, comments and every drug these results affect: "
                   f"*{SMART_LINK_LABEL}*." if has_app else "Implications and comments: see the guideline link.")
        tail = ["", pointer, "", f"_{md_text(attribution(sources))}_"]
        implications_line = "**Implications:** " + " ".join(implications) if implications else None
        # words of everything but the result lines, with the implications (word counts add up line by line)
        words = sum(map(_words, head + lines + tail + [implications_line or ""]))
        return _DetailParts(head, lines, implications_line, tail, words)

    @staticmethod
    def _implications(statements: list[Statement]) -> list[str]:
        seen: list[str] = []
        for s in statements:
            for gene, text in s.recommendation.implications.items():
                item = f"{md_text(gene)}: {md_text(text)}"
                if item not in seen:
                    seen.append(item)
        return seen

    def _source(self, guideline, rule: Rule, sources: list[str] | None = None) -> dict[str, Any]:
        sources = sources or [guideline.source]
        return {
            "label": " and ".join(sources) + " via pgx-cds" + (
                "" if "DPWG" not in sources else " (PharmGKB/ClinPGx, CC BY-SA 4.0)" if len(sources) == 1
                else " (DPWG: PharmGKB/ClinPGx, CC BY-SA 4.0)"),
            "url": guideline.url,
            "topic": {"system": TOPIC_SYSTEM, "code": rule.id, "display": rule.title},
        }

    # --- suggestions and links ---------------------------------------------------------------

    def _replace_suggestion(self, drug: DrugEvaluation, alt: Alternative, order: OrderRef, patient_ref: str | None,
                            dose: str | None, whose: str | None) -> dict[str, Any]:
        resource = replacement_request(order.resource, alt.name, alt.rxnorm, patient_ref, dose)
        create = {"type": "create", "resource": resource,
                  "description": f"Create a draft order for {alt.name}" +
                                 (f" with CPIC's dosing advice for this result: {dose}" if dose else "")}
        # create before delete: the CDS Hooks sandbox (and clients built like it) stop applying a
        # suggestion's actions at the first delete; the specification allows either order.
        actions = [create]
        if order.order_id:
            actions.append({"type": "delete", "description": f"Remove the draft order for {drug.drug}",
                            "resourceId": order.order_id})
            label = f"Replace {drug.drug} with {alt.name}"
        else:
            label = f"Order {alt.name} instead of {drug.drug}"
        if whose:
            label += f" — advice for {whose}"
        return {"label": label, "uuid": new_uuid(), "actions": actions}

    def dose_advice(self, evaluation: Evaluation, drug: str) -> str | None:
        """CPIC's own sentence giving a dose for `drug` and this patient (e.g. rosuvastatin with SLCO1B1
        poor function: "Prescribe ≤20mg as a starting dose …"), or None when CPIC gives none or its
        populations disagree."""
        return self.dose_advices(evaluation, [drug])[drug]

    def dose_advices(self, evaluation: Evaluation, drugs: list[str]) -> dict[str, str | None]:
        """dose_advice for each of `drugs`, in one engine evaluation (a card's alternatives: the engine
        evaluates each drug on its own, so together or apart the answers are the same)."""
        key = (tuple(drugs), _interpretations_key(evaluation.interpretations))
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
            out[drug] = _dose_sentence(of_sources(result.matches, ["CPIC"]))
        return out

    def smart_link(self, app_url: str, evaluation: Evaluation | None, evidence: Mapping[str, GenomicResult],
                   drug: str | None = None) -> dict[str, Any]:
        """A CDS Hooks `smart` link to the summary page; appContext carries the patient's results so the
        page can show them without a second FHIR round trip."""
        return {"label": SMART_LINK_LABEL, "url": app_url, "type": "smart",
                "appContext": app_context(evaluation.interpretations if evaluation else {}, evidence, drug)}

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

    def unreachable_notices(self, drug: DrugEvaluation, rule: Rule, evaluation: Evaluation,
                            statements: list[Statement]) -> list[RenderedCard]:
        """Silence is a statement: when a selected guideline has advice for a gene the patient has a result
        for, but keys it in a way our gene tables cannot reach (e.g. DPWG's genotype-keyed CYP2C9 advice for
        a CYP2C9 diplotype) and none of its recommendations matched, say so instead of showing nothing."""
        out = []
        selected = set(self._rule_sources(rule))
        matched = {m.guideline.id for m in drug.matches}
        for g in self.kb.drugs().get(drug.drug, []):
            if g.source not in selected or g.id in matched:
                continue
            keys, keyed_genes = self._unreachable_keys(g, drug.drug)
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

    def _unreachable_keys(self, g: Guideline, drug: str) -> tuple[list, tuple[str, ...]]:
        """The guideline's keys for `drug` that our gene tables cannot reach, and its genes they name."""
        def find() -> tuple[list, tuple[str, ...]]:
            keys = [u for u in g.unreachable if u.drug == drug]
            return keys, tuple(gene for gene in g.genes if any(gene in u.source_key for u in keys))
        return self._unreachable.get((g.id, drug), find)

    def _rule_sources(self, rule: Rule) -> tuple[str, ...]:
        key = tuple(rule.sources) if rule.sources else None   # with this renderer's rules, all it depends on
        return self._sources.get(key, lambda: rule_sources(self.kb, rule))

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
                    text = table.result_text(key) if table else None
                    if text and text.is_priority:
                        actionable.append((gene, interp, text.consultation))
                        break
        affected: list[tuple[str, list[Statement]]] = []
        for drug in (evaluation.drugs if evaluation else []):
            rule = drug.rules.get(hook) or drug.rules.get("order-sign")
            if rule is None:
                continue
            statements = self.statements(rule, of_sources(self._choose_population(drug, rule, None, None),
                                                          self._rule_sources(rule)))
            if any(s.policy for s in statements):
                affected.append((drug.drug, statements))
        if not actionable and not affected:
            return []
        names = [f"{g}{i.phenotype}" if self.kb.interpreters[g].kind == "allele-status" else f"{g} {i.phenotype}"
                 for g, i, _ in actionable]
        drugs = sorted({d for d, _ in affected})
        summary = _fit_list("Pharmacogenomic results to act on: ", names) if names else \
            "Active medications affected by pharmacogenomic results"
        if drugs:
            longer = f"{summary}; affects {', '.join(drugs)}"
            summary = longer if len(longer) <= SUMMARY_LIMIT else _fit_list(summary + "; affects ", drugs) \
                if len(summary) + 20 <= SUMMARY_LIMIT else summary
        lines = ["**Actionable pharmacogenomic results**", ""]
        for gene, interp, consultation in actionable:
            diplotype = f"{md_data(interp.diplotype)} " if interp.diplotype else ""
            lines.append(f"- **{md_text(gene)}** {diplotype}— {md_text(interp.phenotype)}")
            if consultation:
                lines.append(f"  - {md_text(consultation, indent='    ')}")
        if affected:
            lines += ["", "**Active medications affected**", ""]
            for drug, statements in affected:
                for s in statements:
                    if not s.policy:
                        continue
                    label = f" ({md_text(s.label)})" if s.label else ""
                    g = s.match.guideline
                    lines.append(f"- **{md_text(drug)}**{label}: {md_text(s.recommendation.recommendation, indent='  ')} "
                                 f"([{g.source}]({g.url}), {_classification(s)})")
        shown_sources = sorted({s.match.guideline.source for _, ss in affected for s in ss} or {"CPIC"},
                               key=lambda x: SOURCE_ORDER.get(x, 9))
        lines += ["", f"Knowledge base version `{self.kb.version}`.", "", f"_{md_text(attribution(shown_sources))}_"]
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


@dataclass(frozen=True)
class _DetailParts:
    head: list[str]                 # how the sources compare (when there are several), then a blank line
    advice: list[str]               # the advice, its classification and citation
    implications: str | None        # the implications line, shown when the detail stays within budget
    tail: list[str]                 # the pointer onward and the attribution
    words: int                      # words of all of the above


_MEMO_ENTRIES = 20_000   # per table: far more than the combinations a knowledge base has in practice


def _statement_key(s: Statement) -> tuple:
    """What a statement's rendering rests on, by name: the recommendation (unique in its guideline),
    how it matched, its policy and its label."""
    return (s.match.guideline.id, s.recommendation.id, s.match.matched_by, s.policy, s.population, s.score,
            s.score_gene, s.source)


def _interpretations_key(interpretations: Mapping[str, Iterable[Interpretation]]) -> tuple:
    """All the engine reads of interpreted results: how each was stated, its phenotype and lookup values."""
    return tuple(sorted((gene, tuple((i.stated_as, i.phenotype, tuple(sorted(i.lookup.items()))) for i in items))
                        for gene, items in interpretations.items()))


def app_context(interpretations: Mapping[str, list[Interpretation]], evidence: Mapping[str, GenomicResult],
                drug: str | None = None) -> str:
    """The SMART app's appContext: the patient's results as stated (so the page re-interprets them with
    the same knowledge), with date and laboratory, and the drug the card was about. No patient id."""
    results = []
    for gene, items in sorted(interpretations.items()):
        for i in items:
            found = next((evidence[s] for s in i.source_ids if s in evidence), None)
            item: dict[str, Any] = {"gene": gene, "stated_as": i.stated_as, "phenotype": i.phenotype}
            if i.stated_as == "diplotype" and i.diplotype:
                item["value"] = i.diplotype
            elif i.stated_as == "activity score" and i.activity_score:
                item["value"] = f"score:{i.activity_score}"
            elif i.stated_as == "allele status":
                item["value"] = next(iter(i.lookup.values()))
            else:
                item["value"] = i.phenotype
            if i.source_ids:
                item["source"] = list(i.source_ids)
            if found and found.effective:
                item["date"] = found.effective.date().isoformat()
            if found and getattr(found, "performer", None):
                item["lab"] = found.performer
            results.append(item)
    body: dict[str, Any] = {"results": results}
    if drug:
        body["drug"] = drug
    return orjson.dumps(body).decode()    # compact, UTF-8 as is: what json.dumps(separators, ensure_ascii=False) gives


def replacement_request(draft: dict[str, Any] | None, name: str, rxnorm: str, patient_ref: str | None,
                        dose_text: str | None = None) -> dict[str, Any]:
    """A draft MedicationRequest for an alternative ingredient, keeping the draft's subject and intent;
    `dose_text`: CPIC's dosing sentence for this patient, as the dosage instruction's text."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": (draft or {}).get("intent") or "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name},
        "subject": {"reference": _subject(draft, patient_ref)},
    }
    if isinstance((draft or {}).get("encounter"), dict):
        resource["encounter"] = draft["encounter"]
    if dose_text:
        resource["dosageInstruction"] = [{"text": dose_text}]
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


def _classification(statement: Statement) -> str:
    rec = statement.recommendation
    if rec.classification:
        return rec.classification
    return "not graded (N/A in the PharmGKB export)" if statement.match.guideline.source == "DPWG" else "none"


def _cited(guideline: Guideline) -> str:
    """The guideline's newest publication, or why there is none (some DPWG annotations list none)."""
    if not guideline.citations:
        return ("PharmGKB/ClinPGx guideline annotation (it lists no publication)" if guideline.source == "DPWG"
                else "no PMID in the source release")
    c = guideline.citations[0]
    return f"{c.year}, PMID {c.pmid}" if c.year else f"PMID {c.pmid}"


def attribution(sources: list[str]) -> str:
    names = "; ".join(SOURCE_ATTRIBUTION.get(s, s) for s in sources)
    return f"{names}; PharmGKB/ClinPGx annotations (CC BY-SA 4.0). Decision support, not a substitute for clinical judgement."


def _differs_by(statements: list[Statement]) -> str | None:
    if len(statements) < 2:
        return None
    dimensions = []
    if len({s.score for s in statements}) > 1:
        dimensions.append("activity score")
    by_source: dict[str | None, set[str]] = {}
    for s in statements:
        by_source.setdefault(s.match.guideline.source, set()).add(s.recommendation.population)
    several = [p for p in by_source.values() if len(p) > 1]   # populations differ within one source
    if several:
        dimensions.append(population_dimension(set().union(*several)))
    if len({s.source for s in statements}) > 1:
        dimensions.append("source")
    return " and ".join(dimensions) or "recommendation"


def _flag_action(flags: list[Flags | None]) -> str:
    alt = any(f is None or f.alternate_drug_available for f in flags)
    dose = any(f is None or f.dosing_information for f in flags)
    return _FLAG_ACTIONS[(alt, dose)]


def _result_line(f: dict[str, Any]) -> str:
    if f["phenotype"] == NO_RESULT:
        return f"- {md_text(f['gene'])}: no result on file"
    parts = [f"- **{md_text(f['gene'])}**"]
    if f.get("diplotype"):
        parts.append(md_data(f["diplotype"]))
    parts.append(f"— **{md_text(f['phenotype'])}**")
    if f.get("activity_score") and f["activity_score"] != f["phenotype"]:
        parts.append(f"(activity score {md_text(f['activity_score'])})")
    if f.get("stated_as") == "phenotype" and f["lookup_key"] != f["phenotype"]:
        parts.append("(reported as phenotype)")
    if f.get("date"):
        parts.append(f"· {f['date']}")          # ISO date we formatted ourselves
    if f.get("lab"):
        parts.append(f"· {md_data(f['lab'])}")
    if f.get("source_ids"):
        parts.append("· " + ", ".join(md_data(s) for s in f["source_ids"]))
    return " ".join(parts)


_SENTENCE = re.compile(r"(?<=[.;])\s+(?=[A-Z(])")
_DOSE = re.compile(r"\d\s*(mg|µg|μg|mcg|g)\b", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(" ".join(text.split())) if s]


def _first_sentence(text: str) -> str:
    first = _sentences(text)
    return first[0].rstrip(".;") if first else ""


# Connectors after which CPIC's sentence only adds a later step to the first one ("Reduce starting dose
# by 50% followed by titration …", "Prescribe ≤20mg as a starting dose and adjust doses …"): the words
# before them are the first step as CPIC wrote it, so they can stand in a summary on their own.
_LATER_STEP = re.compile(r"\s(?:followed by|and adjust|and titrate|then)\s")


def _leading_step(sentence: str) -> str | None:
    parts = _LATER_STEP.split(sentence, maxsplit=1)
    lead = parts[0].rstrip(",;: ")
    if len(parts) == 1 or len(lead.split()) < 3 or "," in lead:
        return None
    return lead


def _words(markdown: str) -> int:
    return len(re.findall(r"[^\s*_`\\-]+", markdown))


def _fit_list(prefix: str, items: list[str], limit: int = SUMMARY_LIMIT) -> str:
    """prefix + as many items as fit, then "and N more" — never a cut word."""
    for n in range(len(items), 0, -1):
        rest = len(items) - n
        text = prefix + ", ".join(items[:n]) + (f" and {rest} more" if rest else "")
        if len(text) <= limit:
            return text
    return prefix.rstrip(": ;") + f": {len(items)}"


def _dose_sentence(matches) -> str | None:
    """The one dose sentence CPIC's matched recommendations give, or None (none, or they differ)."""
    sentences = set()
    for m in matches:
        flags = m.recommendation.flags
        if flags is None or not flags.dosing_information:
            continue
        sentence = next((x for x in _sentences(m.recommendation.recommendation) if _DOSE.search(x)), None)
        sentences.add(sentence)
    return sentences.pop() if len(sentences) == 1 else None
