"""Facts read from a patient's record: the common language of the FHIR reader, the engine and audit.

The FHIR layer produces these from Observations and MedicationRequests; the genotype interpreter
turns a `GenomicResult` into CPIC terms; the engine matches them against compiled rules.
Nothing here knows about FHIR JSON or about guidelines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class GenomicResult:
    """One pharmacogenomic result for one gene, as stated by its source.

    Exactly one of `diplotype`, `phenotype`, `activity_score` or (`allele`, `allele_present`) is the
    primary statement; a therapeutic-implication Observation may carry a phenotype beside a diplotype.
    Values are strings as the lab wrote them, lightly normalised (gene prefix removed from the
    diplotype, phenotype mapped to CPIC's term by guidelines/fhir-mappings.yaml).
    """

    gene: str                                # HGNC symbol: "CYP2C19", "HLA-B", "MT-RNR1"
    diplotype: str | None = None             # "*1/*2", "c.1905+1G>A/Reference", "*57:01/*08:01"
    phenotype: str | None = None             # CPIC term: "Poor Metabolizer", "Decreased Function"
    activity_score: str | None = None        # "1.0", "≥3.0"
    allele: str | None = None                # allele-positivity genes (HLA): "*57:01"
    allele_present: bool | None = None       # True = positive/detected, False = negative
    source_id: str | None = None             # "Observation/abc" (audit; never a patient id)
    status: str | None = None                # FHIR Observation.status
    effective: datetime | None = None        # effective[x] or issued: decides which result is newest
    text: str | None = None                  # the original display/text, for cards and audit
    performer: str | None = None             # performing laboratory's name (Observation.performer), for cards
    reason: str | None = None                # why its source calls it Indeterminate (phenotype "Indeterminate")


@dataclass(frozen=True)
class Ingredient:
    """A drug ingredient by RxNorm ingredient code (TTY=IN)."""

    rxnorm: str                              # "32968"
    name: str                                # "clopidogrel"


@dataclass(frozen=True)
class MedicationOrder:
    """A draft or active medication order and the ingredients it resolves to."""

    order_id: str | None                     # "MedicationRequest/request-123"
    ingredients: tuple[Ingredient, ...] = ()
    codes: tuple[str, ...] = ()              # what was ordered: "rxnorm:309362", "text:clopidogrel 75 MG"
    display: str | None = None               # human-readable name of the ordered product
    unresolved: bool = False                 # True: nothing could be resolved; no card, audit it
    resolution: str | None = None            # how it was resolved: "rxnorm-product", "medication-ingredient", "name"
    # unresolved because its codes or names disagree: the ingredients they name (none of them is used)
    candidates: tuple[Ingredient, ...] = ()
    resource: dict | None = field(default=None, compare=False, repr=False)  # the raw entry, for suggestions
