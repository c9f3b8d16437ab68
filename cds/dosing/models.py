"""Schema of a dosing algorithm file (guidelines/dosing/*.yaml): a published regression model with its
coefficients, the guideline flow around it (when to compute, when to dose clinically, adjustments) and
the citations a pharmacist reviews line by line. `cds validate` checks it like every knowledge file.

The model is linear in its inputs on a transformed scale (IWPC: the square root of the weekly dose):
    transformed dose = intercept + Σ coefficient × numeric input + Σ coefficient of each categorical value
and `output.transform` says how to return to mg per week.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cds.knowledge.models import Citation, Strict

# The inputs a dosing file may name; cds/dosing/inputs.py gathers each from FHIR (or a face's flags).
NumericInput = Literal["age_decades", "height_cm", "weight_kg"]
CategoricalInput = Literal["VKORC1", "CYP2C9", "race", "enzyme_inducer", "amiodarone"]
RaceGroup = Literal["white", "asian", "black", "missing_or_mixed"]


class Reference(Strict):
    """An independent public implementation the coefficients were checked against."""

    name: str
    url: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    note: str | None = None


class NumericTerm(Strict):
    input: NumericInput
    coefficient: float
    definition: str                       # what the input is, exactly (units, rounding)


class CategoricalTerm(Strict):
    input: CategoricalInput
    coefficients: dict[str, float] = Field(min_length=1)   # value → coefficient; the reference value is 0
    definition: str


class NotApplied(Strict):
    """A published coefficient kept for review but never applied, with why (e.g. IWPC's 'genotype
    unknown' terms: here a missing genotype is a missing input and gives no number)."""

    term: str
    coefficient: float
    reason: str


class Output(Strict):
    transform: Literal["square"]          # the model predicts √(weekly dose)
    unit: Literal["mg/week"]


class FlowStep(Strict):
    """One box of the guideline's flow chart around the algorithm.

    action: `dose-clinically` (no number: the guideline's text instead), `adjust` (multiply the estimate by
    the range `factor`), `caution` (a statement beside the number)."""

    id: str = Field(pattern=r"^[a-z0-9-]+$")
    action: Literal["dose-clinically", "adjust", "caution"]
    text: str                             # the guideline's words, as the card shows them
    classification: str | None = None
    source: str
    # when: every listed condition must hold
    race: list[RaceGroup] = Field(default_factory=list)
    cyp2c9_phenotypes: list[str] = Field(default_factory=list)
    cyp2c9_diplotypes: list[str] = Field(default_factory=list)
    vkorc1: list[str] = Field(default_factory=list)
    carries: dict[str, list[str]] = Field(default_factory=dict)   # gene → alleles, any one carried
    factor: tuple[float, float] | None = None                     # adjust: low, high multipliers

    @model_validator(mode="after")
    def _adjust_has_a_factor(self) -> FlowStep:
        if (self.action == "adjust") != (self.factor is not None):
            raise ValueError("an `adjust` step needs `factor` (low, high), and only it")
        if not (self.race or self.cyp2c9_phenotypes or self.cyp2c9_diplotypes or self.vkorc1 or self.carries):
            raise ValueError("a flow step needs a condition "
                             "(race, cyp2c9_phenotypes, cyp2c9_diplotypes, vkorc1 or carries)")
        return self


class DosingAlgorithm(Strict):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    name: str
    drug: str
    guideline: str                        # the guideline file whose drug this doses (guidelines/cpic/*.yaml)
    citation: Citation
    cross_checks: list[Reference] = Field(min_length=2)
    output: Output
    intercept: float
    numeric: list[NumericTerm] = Field(min_length=1)
    categorical: list[CategoricalTerm] = Field(default_factory=list)
    not_applied: list[NotApplied] = Field(default_factory=list)
    genes: list[str] = Field(min_length=1)          # genes whose results the algorithm reads
    observation_window_months: int = Field(gt=0)    # how old a height or weight may be
    adult_from_years: int = Field(gt=0)             # the algorithm and flow chart are for adults
    flow: list[FlowStep] = Field(default_factory=list)
    flow_source: str                                 # the guideline's flow chart (CPIC 2017 Figure 2)
    unavailable_text: str                            # what the card says instead of a number
    caveats: list[str] = Field(min_length=1)         # shown with every estimate (INR-guided titration)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _inputs_once(self) -> DosingAlgorithm:
        names = [t.input for t in self.numeric] + [t.input for t in self.categorical]
        if len(names) != len(set(names)):
            raise ValueError(f"an input is named twice: {names}")
        return self
