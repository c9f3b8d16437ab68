"""Schemas of the three kinds of knowledge YAML (gene tables, guidelines, CDS rules) and hook definitions.

Every model forbids unknown fields so that a misspelt key is an error with its line, not a silently
ignored setting.
"""
from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NO_RESULT = "No Result"          # CPIC's lookup value for "no result for this gene on file"
INDETERMINATE = "Indeterminate"  # CPIC's phenotype when the alleles do not determine one
SCORE_NA = "n/a"                 # CPIC's activity score when an allele has no activity value

_SCORE = re.compile(r"^(≥)?(\d+(\.\d+)?)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- gene tables -------------------------------------------------------------------------------


class AlleleDef(Strict):
    function: str | None = None          # CPIC clinical function; None: CPIC assigns none (→ Indeterminate)
    activity: str | None = None          # activity value ("1.0", "0.25", "≥3.0", "n/a"); activity-score genes
    note: str | None = None              # provenance note, e.g. a change between CPIC releases

    @field_validator("activity")
    @classmethod
    def _activity_is_a_score(cls, v: str | None) -> str | None:
        if v is not None and v != SCORE_NA and not _SCORE.match(v):
            raise ValueError(f"activity value {v!r} is not a number, '≥number' or 'n/a'")
        return v


class AlleleAlias(Strict):
    """A name CPIC's change log renamed or folded into another allele (NUDT15 *2 → *3, G6PD "Telti/Kobe" →
    "Telti, Kobe"): a result naming it is read as `allele`, and `source` cites the change-log row."""

    allele: str
    source: str


class PhenotypeRule(Strict):
    """Allele function(s) → phenotype. Two functions for a diploid pair (order irrelevant), one for a
    haploid result (G6PD in males, mitochondrial MT-RNR1)."""

    functions: list[str] = Field(min_length=1, max_length=2)
    phenotype: str
    # where the rule is written, when not the diplotype table (e.g. a CPIC result definition)
    source: str | None = None


class ScoreRange(Strict):
    """Activity score range (inclusive) → phenotype."""

    min: float
    max: float | None = None  # None: no upper bound
    phenotype: str

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        return self


class GeneResultText(Strict):
    """CPIC's post-test interpretation of one gene result (for the patient-view summary)."""

    result: str                              # phenotype, activity score key or allele status
    priority: str | None = None              # CPIC EHR priority, e.g. "Abnormal/Priority/High Risk"
    consultation: str | None = None

    @property
    def is_priority(self) -> bool:
        """CPIC flags the result for the EHR's attention. Its release spells this several ways
        ("Abnormal/Priority/High Risk", "Priority/High-Risk"; the others are "Normal/Routine/Low Risk",
        "Routine/Low-Risk", "Normal Risk", "none"): every priority spelling names "Priority"."""
        return self.priority is not None and "priority" in self.priority.lower()


class Source(Strict):
    name: str
    version: str
    url: str | None = None
    note: str | None = None


class Bases(Strict):
    reference: str = Field(pattern=r"^[ACGT]$")
    variant: str = Field(pattern=r"^[ACGT]$")


class SingleVariant(Strict):
    """A gene read at one variant (VKORC1 rs9923231): its bases on the genomic reference's forward strand
    (how CPIC names the alleles) and on the gene's own strand (how the legacy names write it), so every
    spelling a laboratory uses is read on the strand it names (cds/snv.py)."""

    rsid: str = Field(pattern=r"^rs\d+$")
    genomic: Bases                       # forward (positive) strand of the genomic reference
    gene_strand: Bases                   # the gene's coding strand
    names: list[str] = Field(default_factory=list)   # positions named on the gene strand: '-1639', 'c.-1639', '3673'
    reference_allele: str                # the table's allele names for each base
    variant_allele: str
    source: str

    @model_validator(mode="after")
    def _strands_agree(self) -> SingleVariant:
        complement = {"A": "T", "C": "G", "G": "C", "T": "A"}
        same = self.genomic == self.gene_strand
        reverse = (complement[self.genomic.reference], complement[self.genomic.variant]) == \
            (self.gene_strand.reference, self.gene_strand.variant)
        if not (same or reverse):
            raise ValueError("gene_strand bases are neither the genomic bases nor their complement")
        if {self.genomic.reference, self.genomic.variant} & {self.gene_strand.reference, self.gene_strand.variant} \
                and not same:
            raise ValueError("the two strands share a base, so a spelling without a strand name would be ambiguous")
        return self


class GeneTable(Strict):
    gene: str
    # genotype: a gene CPIC gives no allele functions or phenotypes (VKORC1, CYP4F2); a result is read as its
    # two alleles, named by `genotype_names` where a guideline keys by a name ("-1639 AA"), else as the diplotype.
    kind: Literal["function-pair", "activity-score", "allele-status", "genotype"]
    sources: list[Source] = Field(min_length=1)
    alleles: dict[str, AlleleDef] = Field(default_factory=dict)
    aliases: dict[str, AlleleAlias] = Field(default_factory=dict)        # former name → current allele
    phenotype_rules: list[PhenotypeRule] = Field(default_factory=list)
    score_ranges: list[ScoreRange] = Field(default_factory=list)
    diplotype_exceptions: dict[str, str] = Field(default_factory=dict)  # "*1/*2" → phenotype
    alleles_of_interest: list[str] = Field(default_factory=list)         # allele-status genes
    functions_without_rule: list[str] = Field(default_factory=list)      # known to have no CPIC rule yet
    results: list[GeneResultText] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    variant: SingleVariant | None = None                                 # genotype genes read at one variant
    genotype_names: dict[str, str] = Field(default_factory=dict)        # "A/B" (table alleles) → name

    def result_text(self, key: str) -> GeneResultText | None:
        """CPIC's interpretation of one lookup value (phenotype, activity score or allele status)."""
        return next((r for r in self.results if r.result == key), None)

    @model_validator(mode="after")
    def _aliases_name_alleles(self) -> GeneTable:
        for name, alias in self.aliases.items():
            if alias.allele not in self.alleles:
                raise ValueError(f"alias {name!r} names {alias.allele!r}, which is not an allele of the table")
            if name in self.alleles:
                raise ValueError(f"alias {name!r} is an allele of the table itself")
        return self

    @model_validator(mode="after")
    def _kind_has_what_it_needs(self) -> GeneTable:
        if self.kind == "allele-status" and not self.alleles_of_interest:
            raise ValueError("an allele-status gene needs alleles_of_interest")
        if self.kind == "genotype":
            unknown = [a for pair in self.genotype_names for a in pair.split("/") if a not in self.alleles]
            if unknown or not self.alleles:
                raise ValueError(f"genotype gene: genotype_names name alleles not in the table: {unknown}"
                                 if unknown else "a genotype gene needs alleles")
            if self.variant and {self.variant.reference_allele, self.variant.variant_allele} - set(self.alleles):
                raise ValueError("variant: reference_allele and variant_allele must be alleles of the table")
        if self.kind == "activity-score":
            if not self.score_ranges:
                raise ValueError("an activity-score gene needs score_ranges")
            missing = [name for name, a in self.alleles.items() if a.activity is None]
            if missing:
                raise ValueError(f"activity-score gene: alleles without an activity value: {', '.join(missing[:5])}")
        return self


# --- guidelines --------------------------------------------------------------------------------


class Citation(Strict):
    pmid: str
    title: str | None = None          # None: the source release gives the PMID only
    year: int | None = None
    journal: str | None = None

    def text(self) -> str:
        head = " ".join(x for x in (self.title, f"({self.year})" if self.year else None) if x)
        return f"{head} PMID {self.pmid}" if head else f"PMID {self.pmid}"


class Drug(Strict):
    name: str
    rxnorm: str | None = None             # RxNorm ingredient (TTY=IN) code
    rxnorm_source: str | None = None
    pharmgkb: str | None = None
    # why the sources give it no RxNorm code (ribostamycin, flucloxacillin, flucytosine): orders, `cds explain`
    # and the workbench find it by its ingredient name instead
    no_rxnorm: str | None = None


class Flags(Strict):
    """PharmGKB curators' flags on a recommendation; they drive the default card policy."""

    dosing_information: bool = False
    alternate_drug_available: bool = False
    other_prescribing_guidance: bool = False


Classification = Literal["Strong", "Moderate", "Optional", "No Recommendation"]


class Recommendation(Strict):
    id: str
    drug: str
    population: str = "general"
    lookup: dict[str, str] = Field(min_length=1)       # gene → phenotype / activity score / allele status
    phenotypes: dict[str, str] = Field(default_factory=dict)  # gene → phenotype named by the source
    classification: Classification | None = None       # None: the source gives none
    recommendation: str
    implications: dict[str, str] = Field(default_factory=dict)
    comments: str | None = None
    flags: Flags | None = None                          # None: the source has no flags for this one
    source: str                                          # the release this content comes from


class UnreachableRecommendation(Strict):
    """A source recommendation our gene tables cannot reach (its key names a gene, phenotype or genotype
    that no table here produces): kept, with the reason, so the validator and the pharmacist see it."""

    id: str
    drug: str
    source_key: dict[str, str]                            # the source's lookup key, verbatim (genotypes as JSON)
    reason: str
    classification: Classification | None = None
    recommendation: str
    flags: Flags | None = None
    source: str


GuidelineSource = Literal["CPIC", "DPWG"]


class Guideline(Strict):
    id: str
    name: str
    source: Literal["CPIC", "DPWG", "local"]
    url: str
    annotation_url: str | None = None
    pharmgkb_id: str | None = None
    citations: list[Citation] = Field(default_factory=list)  # empty: the source gives the guideline URL only
    version: str                                         # source release(s) this file encodes
    genes: list[str] = Field(min_length=1)
    drugs: list[Drug] = Field(min_length=1)
    recommendations: list[Recommendation] = Field(default_factory=list)
    unreachable: list[UnreachableRecommendation] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def reference(self) -> str:
        """How a card or explanation cites the guideline: its first publication, else its URL alone."""
        if self.citations:
            return f"{self.citations[0].text()}; {self.url}"
        return f"no PMID in the source release; {self.url}"


# --- CDS rules (local policy) ------------------------------------------------------------------

Indicator = Literal["info", "warning", "critical"]
Hook = Literal["order-select", "order-sign", "patient-view", "medication-prescribe"]


class Alternative(Strict):
    name: str
    rxnorm: str
    source: str                                          # where the code comes from


class Adjustment(Strict):
    """Policy for some of a rule's recommendations: those whose lookup values match `when`
    (gene → any of these values; every listed gene must match) or whose ids are listed."""

    when: dict[str, list[str]] = Field(default_factory=dict)
    recommendations: list[str] = Field(default_factory=list)
    card: bool | None = None                             # force a card on (True) or off (False)
    indicator: Indicator | None = None
    summary: str | None = None                           # template; see cds/cards/text.py for placeholders
    suggest_alternatives: bool | None = None

    @model_validator(mode="after")
    def _selects_something(self) -> Adjustment:
        if not self.when and not self.recommendations:
            raise ValueError("an adjustment needs `when` or `recommendations` to say what it applies to")
        return self


class PreTest(Strict):
    """Alert when the drug is ordered and no result for `genes` is on file."""

    genes: list[str] = Field(min_length=1)
    indicator: Indicator = "warning"
    summary: str | None = None
    test_display: str | None = None


class CaseExpectation(Strict):
    indicator: Indicator | None = None
    summary_contains: list[str] = Field(default_factory=list)
    # Alternative drug names offered as suggestions, each of them; `[]`: no suggestion at all;
    # omitted: suggestions are not checked.
    suggests: list[str] | None = None
    pretest: bool = False
    sources: list[GuidelineSource] = Field(default_factory=list)  # the guideline sources the card rests on, exactly


class RuleTestCase(Strict):
    name: str
    genotypes: dict[str, str] = Field(default_factory=dict)   # same syntax as `cds explain --genotype`
    drugs: list[str] = Field(min_length=1)
    hook: Hook = "order-sign"
    population: str | None = None
    expect: list[CaseExpectation] = Field(default_factory=list)  # empty list: no card


class Rule(Strict):
    id: str
    title: str
    guideline: str | None = None                          # None: applies to drugs of any guideline
    drugs: list[str] | Literal["*"]                       # "*": every drug no other rule claims
    enabled: bool = True
    hooks: list[Hook] = Field(default_factory=lambda: list[Hook](["order-select", "order-sign"]))
    population: str | None = None                         # population shown when the request names none
    cards_for: Literal["actionable", "all"] = "actionable"
    indicator: Indicator | None = None                    # None: derived from the recommendation
    summary: str | None = None
    alternatives: list[Alternative] = Field(default_factory=list)
    adjustments: list[Adjustment] = Field(default_factory=list)
    pretest: PreTest | None = None
    effective_from: date | None = None
    effective_until: date | None = None
    # Which guideline sources raise this rule's cards: CPIC, DPWG or both. None: the site default, i.e. the
    # `sources` of the drugs: '*' rule, and CPIC when that rule sets none (see cds/sources.py).
    sources: list[GuidelineSource] | None = Field(default=None, min_length=1)
    tests: list[RuleTestCase] = Field(default_factory=list)


class RuleFile(Strict):
    rules: list[Rule] = Field(min_length=1)


# --- CDS Hooks service definitions ------------------------------------------------------------


class HookService(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    hook: Hook
    title: str
    description: str
    prefetch: dict[str, str] = Field(default_factory=dict)
    optional_prefetch: list[str] = Field(default_factory=list)   # may be absent when no FHIR server is given
    usage_requirements: str | None = None

    @model_validator(mode="after")
    def _optional_keys_exist(self) -> HookService:
        unknown = [k for k in self.optional_prefetch if k not in self.prefetch]
        if unknown:
            raise ValueError(f"optional_prefetch names keys that are not prefetch templates: {', '.join(unknown)}")
        return self


class HookFile(Strict):
    services: list[HookService] = Field(min_length=1)
