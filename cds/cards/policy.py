"""The local policy (rules/) applied to one recommendation: whether it raises a card, how cautious the
card is, whose summary wording it takes and whether it suggests the rule's alternatives."""
from __future__ import annotations

from collections.abc import Iterable

from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import Adjustment, Recommendation, Rule
from cds.sources import is_dpwg

from .model import CardPolicy

CAUTION = {"info": 0, "warning": 1, "critical": 2}


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
    return _priority_or_unknown(rec, kb)


def _priority_or_unknown(rec: Recommendation, kb: KnowledgeBase | None) -> bool:
    """A flagless recommendation: CPIC files one of its results as a priority result, or none of its
    genes has a result text to ask."""
    texts = [t for t in (kb.genes[gene].result_text(value) for gene, value in rec.lookup.items()
                         if kb and gene in kb.genes) if t is not None]
    return not texts or any(t.is_priority for t in texts)


def most_cautious(indicators: Iterable[str]) -> str:
    return max(indicators, key=lambda i: CAUTION.get(i, 0), default="info")


class PolicyBook:
    """Each (rule, recommendation)'s CardPolicy, worked out once: the knowledge and the rules never
    change under it."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._policies: dict[tuple[str, str], CardPolicy | None] = {}

    def policy(self, rule: Rule, rec: Recommendation) -> CardPolicy | None:
        key = (rule.id, rec.id)
        if key not in self._policies:
            self._policies[key] = self._decide(rule, rec)
        return self._policies[key]

    def _decide(self, rule: Rule, rec: Recommendation) -> CardPolicy | None:
        adj = self._adjustment(rule, rec)
        if not (adj.card if adj and adj.card is not None else rule.cards_for == "all" or is_actionable(rec, self.kb)):
            return None
        return CardPolicy(
            indicator=(adj.indicator if adj else None) or rule.indicator or default_indicator(rec),
            summary_template=(adj.summary if adj else None) or rule.summary,
            suggest_alternatives=_suggests(adj, rule, rec),
        )

    def _adjustment(self, rule: Rule, rec: Recommendation) -> Adjustment | None:
        for adj in rule.adjustments:
            if rec.id in adj.recommendations:
                return adj
            if adj.when and all(self._value_matches(gene, rec.lookup.get(gene), wanted)
                                for gene, wanted in adj.when.items()):
                return adj
        return None

    def _value_matches(self, gene: str, value: str | None, wanted: list[str]) -> bool:
        if value is None:
            return False
        return value in wanted or self.kb.interpreters[gene].phenotype_of_key(value) in wanted


def _suggests(adj: Adjustment | None, rule: Rule, rec: Recommendation) -> bool:
    """The card suggests the rule's alternatives: as the adjustment says, else when the rule has some and
    the curators flag an alternative drug (or the recommendation has no flags)."""
    if adj and adj.suggest_alternatives is not None:
        return adj.suggest_alternatives
    return bool(rule.alternatives) and (rec.flags is None or rec.flags.alternate_drug_available)
