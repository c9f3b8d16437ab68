"""Which recommendations a card carries and what tells them apart, decided from the evaluation, the
rules and the knowledge alone (no text): the site's sources, the population, the labelled statements,
the results they rest on."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from cds.engine import DrugEvaluation, Evaluation, Match, PreTestAlert
from cds.facts import GenomicResult
from cds.genotype import Interpretation
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import NO_RESULT, Guideline, Rule, UnreachableRecommendation
from cds.memo import Memo
from cds.populations import GENERAL
from cds.sources import of_sources, rule_sources

from .model import ActionableResult, AffectedDrug, Differences, Statement
from .policy import PolicyBook

MEMO_ENTRIES = 20_000   # per table: far more than the combinations a knowledge base has in practice


class Chooser:
    """Built once with the knowledge base; chooses each card's statements per request."""

    def __init__(self, kb: KnowledgeBase, policies: PolicyBook):
        self.kb = kb
        self.policies = policies
        # Knowledge alone, as large as the knowledge: each rule's sources (rule_sources scans every rule
        # for the site default), and each guideline's unreachable keys for a drug with the genes they name.
        self._sources: Memo[tuple[str, ...]] = Memo(MEMO_ENTRIES)
        self._unreachable: Memo[tuple[list, tuple[str, ...]]] = Memo(MEMO_ENTRIES)

    def order_matches(self, drug: DrugEvaluation, rule: Rule, population: str | None, age: int | None,
                      alerts: list[PreTestAlert]) -> list[Match]:
        """The matches an order card shows: per source the site chose, the population the request
        names (or the rule, or the patient's age), without the no-result advice a pre-test alert replaces."""
        pretest_genes = {a.gene for a in alerts}
        matches: list[Match] = []
        for source in self.rule_sources(rule):  # the site's choice: CPIC, DPWG or both
            # populations are chosen per source: DPWG's advice has none, so CPIC's choice must not hide it
            chosen = choose_population(replace(drug, matches=of_sources(drug.matches, [source])),
                                       rule, population, age)
            matches += [m for m in chosen if m.missing_gene not in pretest_genes
                        and not any(m.recommendation.lookup.get(g) == NO_RESULT for g in pretest_genes)]
        return matches

    def statements(self, rule: Rule, matches: list[Match]) -> list[Statement]:
        """The labelled statements of one card: a part of the label only where the statements differ."""
        sources = {m.guideline.source for m in matches}
        populations = {source: {m.recommendation.population for m in matches if m.guideline.source == source}
                       for source in sources}
        out = []
        for m in matches:
            pop = m.recommendation.population
            out.append(Statement(
                m, self.policies.policy(rule, m.recommendation),
                # a population is named where it is not "general", or where one source has several
                population=pop if pop != GENERAL or len(populations[m.guideline.source]) > 1 else None,
                score=m.score, score_gene=m.score_gene, source=m.guideline.source if len(sources) > 1 else None,
                missing_gene=m.missing_gene, missing_value=m.missing_value))
        return out

    def rule_sources(self, rule: Rule) -> tuple[str, ...]:
        key = tuple(rule.sources) if rule.sources else None   # with this chooser's rules, all it depends on
        return self._sources.get(key, lambda: rule_sources(self.kb, rule))

    def unreachable_keys(self, g: Guideline, drug: str) -> tuple[list, tuple[str, ...]]:
        """The guideline's keys for `drug` that our gene tables cannot reach and that carry advice, and its
        genes they name. A key whose recommendation is the source's own "no recommendation" (no curator
        flag set, e.g. DPWG's HLA-B '1511 and 1502') leaves nothing unsaid when it cannot be matched."""
        def find() -> tuple[list, tuple[str, ...]]:
            keys = [u for u in g.unreachable if u.drug == drug and _advises(u)]
            return keys, tuple(gene for gene in g.genes if any(gene in u.source_key for u in keys))
        return self._unreachable.get((g.id, drug), find)

    def results(self, evaluation: Evaluation, statements: list[Statement],
                evidence: Mapping[str, GenomicResult]) -> list[dict[str, Any]]:
        """The results the statements rest on, for the detail and audit: one per gene and lookup value
        (a phenotype-only result with several possible scores gives one per score), with how it was
        stated, its date and laboratory."""
        facts: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for statement in statements:
            for gene, value in statement.recommendation.lookup.items():
                if gene == statement.missing_gene:
                    value = NO_RESULT    # the value this statement is for is not the patient's: none is on file
                if (gene, value) not in seen:
                    seen.add((gene, value))
                    facts.append(self._fact(evaluation, gene, value, evidence))
        return facts

    def _fact(self, evaluation: Evaluation, gene: str, value: str,
              evidence: Mapping[str, GenomicResult]) -> dict[str, Any]:
        if value == NO_RESULT:
            return {"gene": gene, "phenotype": NO_RESULT, "lookup_key": value, "source_ids": []}
        interp = interpretation_for(evaluation.interpretations.get(gene, []), value)
        sources = list(interp.source_ids) if interp else []
        result = next((evidence[s] for s in sources if s in evidence), None)
        return {
            "gene": gene, "phenotype": self._phenotype(gene, value, interp), "lookup_key": value,
            **_as_stated(interp),
            "source_ids": sources,
            "date": result.effective.date().isoformat() if result and result.effective else None,
            "lab": getattr(result, "performer", None) if result else None,
        }

    def _phenotype(self, gene: str, value: str, interp: Interpretation | None) -> str:
        """The phenotype a lookup value stands for; a reported phenotype as reported."""
        interpreter = self.kb.interpreters[gene]
        if interpreter.kind == "allele-status":
            return value
        if interp is None or interp.stated_as != "phenotype":
            return interpreter.phenotype_of_key(value)
        return interp.phenotype

    # --- patient-view ---------------------------------------------------------------------------

    def actionable_results(self, interpretations: Mapping[str, list[Interpretation]]) -> list[ActionableResult]:
        """The patient's results CPIC files as priority results (its EHR priority), by gene."""
        out = []
        for gene, items in sorted(interpretations.items()):
            table = self.kb.genes.get(gene)
            for interp in items:
                texts = [table.result_text(key) for key in interp.lookup.values()] if table else []
                priority = next((t for t in texts if t and t.is_priority), None)
                if priority is not None:
                    allele_status = self.kb.interpreters[gene].kind == "allele-status"
                    out.append(ActionableResult(gene, interp, priority.consultation, allele_status))
        return out

    def affected_drugs(self, evaluation: Evaluation | None, hook: str) -> list[AffectedDrug]:
        """The active medications the patient's results raise a card for, with their statements."""
        out = []
        for drug in (evaluation.drugs if evaluation else []):
            rule = drug.rules.get(hook) or drug.rules.get("order-sign")
            if rule is None:
                continue
            statements = self.statements(rule, of_sources(choose_population(drug, rule, None, None),
                                                          self.rule_sources(rule)))
            if any(s.policy for s in statements):
                out.append(AffectedDrug(drug.drug, tuple(statements)))
        return out


def _advises(u: UnreachableRecommendation) -> bool:
    """Whether a recommendation we cannot reach says something (flags unknown: it may)."""
    f = u.flags
    if u.classification == "No Recommendation":
        return False
    return f is None or f.dosing_information or f.alternate_drug_available or f.other_prescribing_guidance


def choose_population(drug: DrugEvaluation, rule: Rule, population: str | None, age: int | None) -> list[Match]:
    populations = {m.recommendation.population for m in drug.matches}
    for wanted in (population, rule.population, age_population(age, populations)):
        if wanted and wanted in populations:
            return [m for m in drug.matches if m.recommendation.population == wanted]
    return list(drug.matches)


def age_population(age: int | None, populations: set[str]) -> str | None:
    if age is None:
        return None
    if age >= 18 and "adults" in populations:
        return "adults"
    if age < 18 and "pediatrics" in populations:
        return "pediatrics"
    return None


def _as_stated(interp: Interpretation | None) -> dict[str, str | None]:
    if interp is None:
        return {"diplotype": None, "activity_score": None, "stated_as": None}
    return {"diplotype": interp.diplotype, "activity_score": interp.activity_score, "stated_as": interp.stated_as}


def interpretation_for(items: list[Interpretation], value: str) -> Interpretation | None:
    for interp in items:
        if value in interp.lookup.values():
            return interp
    return items[0] if items else None


def differences(statements: list[Statement]) -> Differences:
    """What tells the statements of one card apart."""
    if len(statements) < 2:
        return Differences()
    by_source: dict[str | None, set[str]] = {}
    for s in statements:
        by_source.setdefault(s.match.guideline.source, set()).add(s.recommendation.population)
    several = [p for p in by_source.values() if len(p) > 1]   # populations differ within one source
    missing = tuple(sorted({s.missing_gene for s in statements if s.missing_gene})) \
        if len({s.missing_value for s in statements}) > 1 else ()
    return Differences(several=True, score=len({s.score for s in statements}) > 1,
                       populations=frozenset(set().union(*several)), source=len({s.source for s in statements}) > 1,
                       missing=missing)


def statement_key(s: Statement) -> tuple:
    """What a statement's rendering rests on, by name: the recommendation (unique in its guideline),
    how it matched, its policy and its label."""
    return (s.match.guideline.id, s.recommendation.id, s.match.matched_by, s.policy, s.population, s.score,
            s.score_gene, s.source, s.missing_gene, s.missing_value)


def interpretations_key(interpretations: Mapping[str, Iterable[Interpretation]]) -> tuple:
    """All the engine reads of interpreted results: how each was stated, its phenotype and lookup values."""
    return tuple(sorted((gene, tuple((i.stated_as, i.phenotype, tuple(sorted(i.lookup.items()))) for i in items))
                        for gene, items in interpretations.items()))
