"""What a card is made of, as plain data decided before any text is written (cds.cards.text writes
it): the policy a rule gives a recommendation, the statements a card carries and what tells them
apart, its headline, the notices about the check itself, and the card as rendered with what it
rested on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.engine import Match
from cds.genotype import Interpretation
from cds.knowledge.models import Guideline, Recommendation

TOPIC_SYSTEM = "urn:pgx-cds:rule"


@dataclass(frozen=True)
class CardPolicy:
    indicator: str
    summary_template: str | None
    suggest_alternatives: bool


@dataclass(frozen=True)
class Statement:
    """One recommendation on a card with what tells it apart from the card's other statements. The
    label is built from parts (cds.cards.text.statement_label) so that a further part can be added
    without changing how the others read."""

    match: Match
    policy: CardPolicy | None                # None: shown for completeness, raises no card by itself
    population: str | None = None            # CPIC population code, when the card has several
    score: str | None = None                 # the activity score this statement is for
    score_gene: str | None = None            # whose activity score
    source: str | None = None                # "CPIC", "DPWG": when the card has several sources
    missing_gene: str | None = None          # a gene with no result on file whose value decides …
    missing_value: str | None = None         # … and the value this statement is the advice for

    @property
    def recommendation(self) -> Recommendation:
        return self.match.recommendation

    @property
    def label(self) -> str:
        from cds.cards.text import statement_label  # text imports this module: import when first asked

        return statement_label(self)


@dataclass(frozen=True)
class Differences:
    """What tells a card's statements apart, as decided (cds.cards.text names it): their activity
    scores, their populations within one source, their sources. A card of one statement has none; a
    card whose statements differ by none of these still has several (`unnamed`)."""

    several: bool = False                       # the card carries more than one statement
    score: bool = False                         # the statements are for different activity scores
    populations: frozenset[str] = frozenset()   # the populations of a source that has several
    source: bool = False                        # the statements come from several sources
    # genes with no result on file whose value the statements differ by (a result for them decides)
    missing: tuple[str, ...] = ()

    @property
    def unnamed(self) -> bool:
        return self.several and not (self.score or self.populations or self.source or self.missing)

    @property
    def besides_source(self) -> bool:
        """They differ by something other than their source (a score, a missing result, a population, or
        unnamed)."""
        return self.score or bool(self.missing) or self.beyond_score

    @property
    def beyond_score(self) -> bool:
        """They differ by something other than score, missing result and source (a population, or unnamed)."""
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


@dataclass(frozen=True)
class ActionableResult:
    """A result of the patient's that CPIC files as a priority result (patient-view)."""

    gene: str
    interpretation: Interpretation
    consultation: str | None                 # CPIC's post-test text for it
    allele_status: bool                      # named as "HLA-B*57:01 positive", not "CYP2C19 Poor Metabolizer"


@dataclass(frozen=True)
class AffectedDrug:
    """An active medication and the statements of the patient's results for it (patient-view)."""

    drug: str
    statements: tuple[Statement, ...]


# --- notices: cards about the check itself, not about a guideline -------------------------------

@dataclass(frozen=True)
class Conflict:
    """Current results for the same gene disagree."""

    drug: str | None                         # None: said once for the patient (patient-view)
    genes: tuple[str, ...]
    results: tuple[str, ...]                 # the source ids of the results involved
    code = "conflicting-results"
    indicator = "warning"


@dataclass(frozen=True)
class Uninterpretable:
    """A result on file could not be read or interpreted, and no usable result stands beside it."""

    drug: str | None                         # None: said once for the patient (patient-view)
    genes: tuple[str, ...]
    results: tuple[str, ...]                 # each result involved with why ("Observation/x: …")
    code = "result-not-interpretable"
    indicator = "warning"


@dataclass(frozen=True)
class AssessedUninterpretable:
    """A result on file assesses this drug, but the gene it is about could not be told (a therapeutic
    implication naming the drug, derived from a genotype that is not here), and no advice was given."""

    drug: str
    results: tuple[str, ...]                 # each result involved with why ("Observation/x: …")
    code = "result-not-interpretable"
    indicator = "warning"


@dataclass(frozen=True)
class Unidentified:
    """An order whose codes or names disagree, one of them a drug the knowledge base covers."""

    drug: str                                # the first covered drug it may be
    shown: str                               # what was ordered, as the order says it
    codes: tuple[str, ...]
    named: tuple[str, ...]                   # the drugs its codes name
    code = "order-not-identified"
    indicator = "warning"


@dataclass(frozen=True)
class NotRetrieved:
    """The patient's pharmacogenomic results could not be retrieved."""

    drug: str | None                         # None: the patient-view summary
    reason: str
    code = "check-incomplete"
    indicator = "warning"


@dataclass(frozen=True)
class UnreachableKeys:
    """A selected guideline has advice for a gene the patient has a result for, keyed in a way our gene
    tables cannot reach, and none of its recommendations matched."""

    drug: str
    guideline: Guideline
    genes: tuple[str, ...]
    results: tuple[str, ...]                 # the patient's results for them ("CYP2C9 *1/*3")
    reasons: tuple[str, ...]                 # why the keys cannot be reached
    rule_id: str
    indicator = "info"

    @property
    def code(self) -> str:
        return f"{self.guideline.source.lower()}-key-unreachable"


Notice = Conflict | Uninterpretable | AssessedUninterpretable | Unidentified | NotRetrieved | UnreachableKeys


@dataclass
class RenderedCard:
    """A card (the CDS Hooks JSON, as sent) plus what it rested on, as lists, for audit and tests."""

    card: dict[str, Any]
    rule_id: str                             # the governing rule, "patient-summary", or the notice's code
    drug: str
    guideline_ids: list[str] = field(default_factory=list)        # the guidelines it rests on
    guideline_versions: list[str] = field(default_factory=list)   # their versions, each once
    audited_recommendation_ids: list[str] = field(default_factory=list)  # what the audit records it rests on
    facts: list[dict[str, Any]] = field(default_factory=list)   # gene, phenotype, lookup key, source ids
    pretest: bool = False
    statements: list[Statement] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)            # guideline sources the card rests on (CPIC, DPWG)
    headline: Headline | None = None                            # a recommendation card's summary, as decided
    notice: Notice | None = None                                # a notice card's notice, as decided

    @property
    def indicator(self) -> str:
        return self.card["indicator"]

    @property
    def uuid(self) -> str:
        return self.card["uuid"]

    @property
    def recommendation_ids(self) -> list[str]:
        return [s.recommendation.id for s in self.statements]

    # The audit store and the screening report keep one text column each: several joined with " + ".
    @property
    def guideline_id(self) -> str | None:
        return " + ".join(self.guideline_ids) or None

    @property
    def guideline_version(self) -> str | None:
        return " + ".join(self.guideline_versions) or None

    @property
    def recommendation_id(self) -> str | None:
        return " + ".join(self.audited_recommendation_ids) or None


@dataclass
class OrderRef:
    """The draft order a card is about, so suggestions can replace it."""

    order_id: str | None = None              # "MedicationRequest/abc"
    resource: dict[str, Any] | None = None
