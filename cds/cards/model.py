"""What a card is made of, as plain data: the policy a rule gives a recommendation, the statements a
card carries, the card as rendered with what it rested on, and the order it is about."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.engine import Match
from cds.knowledge.models import Recommendation
from cds.populations import population_words

TOPIC_SYSTEM = "urn:pgx-cds:rule"


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


@dataclass(frozen=True)
class Differences:
    """What tells a card's statements apart, as decided (cds.cards.text names it): their activity
    scores, their populations within one source, their sources. A card of one statement has none; a
    card whose statements differ by none of these still has several (`unnamed`)."""

    several: bool = False                       # the card carries more than one statement
    score: bool = False                         # the statements are for different activity scores
    populations: frozenset[str] = frozenset()   # the populations of a source that has several
    source: bool = False                        # the statements come from several sources

    @property
    def unnamed(self) -> bool:
        return self.several and not (self.score or self.populations or self.source)

    @property
    def besides_source(self) -> bool:
        """They differ by something other than their source (a score, a population, or unnamed)."""
        return self.score or self.beyond_score

    @property
    def beyond_score(self) -> bool:
        """They differ by something other than score and source (a population, or unnamed)."""
        return bool(self.populations) or self.unnamed


@dataclass(frozen=True)
class Headline:
    """A recommendation card's summary as decided, before it is written (cds.cards.text.headline_text):
    "{Drug}: {results} — {whose}: {action}; differs by {differs} — see detail"."""

    drug: str
    results: tuple[str, ...]              # the results it names ("CYP2C19 Poor Metabolizer"); none: none on file
    action: str = ""                      # a source's first sentence, or its first step, or the flags' phrase
    whose: str | None = None              # the source whose words lead, when the card has several
    differs: Differences | None = None    # what the statements differ by, when the summary names it
    see_detail: bool = False              # the summary points to the detail
    template: str | None = None           # the site's wording (its rule's summary template), filled in
    cut: bool = False                     # nothing fitted: the drug and first result, cut, then "see detail"


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
    headline: Headline | None = None                            # a recommendation card's summary, as decided

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
