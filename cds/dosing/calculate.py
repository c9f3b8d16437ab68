"""A dose from a dosing algorithm file and the patient's inputs: pure, no I/O, decided as plain data.

Every input the algorithm names must be present: a missing one is named (with why it is missing) and the
answer is the guideline's flow-chart text, never a number computed from a guessed value. The flow chart's
steps are applied as the file says: `dose-clinically` withholds the number, `adjust` gives the estimate as
a range, `caution` puts the guideline's statement beside it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cds.dosing.models import DosingAlgorithm, FlowStep


@dataclass(frozen=True)
class InputValue:
    """One input as the card shows it: its value, or why there is none."""

    name: str                         # the algorithm's input name (age_decades, weight_kg, VKORC1, …)
    value: float | str | None         # None: missing
    shown: str                        # how a clinician reads it ("95 kg on 2026-11-02", "no amiodarone")
    source: str | None = None         # the resource it came from ("Observation/wt-1")
    missing: str | None = None        # why it is missing ("no body weight on file in the last 12 months")


@dataclass(frozen=True)
class PatientGenes:
    """What the flow chart reads beyond the algorithm's inputs: each gene's result in the gene table's terms."""

    diplotypes: dict[str, str] = field(default_factory=dict)    # gene → diplotype ("*2/*3")
    phenotypes: dict[str, str] = field(default_factory=dict)    # gene → phenotype or key ("Poor Metabolizer")
    alleles: dict[str, set[str]] = field(default_factory=dict)  # gene → alleles carried


@dataclass(frozen=True)
class DoseDecision:
    algorithm: DosingAlgorithm
    inputs: list[InputValue]
    weekly_mg: float | None = None                      # the algorithm's estimate; None: no number
    weekly_range_mg: tuple[float, float] | None = None  # after `adjust` steps, when any applied
    withheld: list[str] = field(default_factory=list)   # why no number: missing inputs, flow-chart steps
    steps: list[FlowStep] = field(default_factory=list) # the flow-chart steps that apply to this patient

    @property
    def daily_mg(self) -> float | None:
        return None if self.weekly_mg is None else self.weekly_mg / 7

    @property
    def missing(self) -> list[InputValue]:
        return [i for i in self.inputs if i.value is None]


def transformed_dose(algorithm: DosingAlgorithm, values: dict[str, float | str]) -> float:
    """intercept + Σ coefficient × input, on the model's scale (IWPC: √(weekly dose)). Every input the
    algorithm names must be in `values` with a value its table knows (KeyError otherwise)."""
    total = algorithm.intercept
    for term in algorithm.numeric:
        total += term.coefficient * float(values[term.input])
    for cat in algorithm.categorical:
        total += cat.coefficients[str(values[cat.input])]
    return total


def weekly_dose(algorithm: DosingAlgorithm, values: dict[str, float | str]) -> float:
    """The estimate in mg per week."""
    scaled = transformed_dose(algorithm, values)
    if algorithm.output.transform == "square":
        # a negative square root has no dose: the inputs are outside what the model describes
        return scaled * scaled if scaled > 0 else 0.0
    raise ValueError(f"unknown transform {algorithm.output.transform}")


def decide_dose(algorithm: DosingAlgorithm, inputs: Iterable[InputValue], genes: PatientGenes,
                age_years: int | None) -> DoseDecision:
    """The dose for one patient, or the reasons there is none."""
    inputs = list(inputs)
    by_name = {i.name: i for i in inputs}
    withheld = [f"{i.missing}" for i in inputs if i.value is None]
    withheld += [f"{i.name} is not named by the algorithm file" for i in inputs if not _known(algorithm, i.name)]
    for name in _input_names(algorithm):
        if name not in by_name:
            withheld.append(f"{name}: not gathered")
    withheld += _outside_the_algorithm(algorithm, by_name)
    if age_years is not None and age_years < algorithm.adult_from_years:
        withheld.append(f"the patient is {age_years}: the algorithm and CPIC's flow chart are for adults "
                        f"({algorithm.adult_from_years} and older)")
    values = {i.name: i.value for i in inputs if i.value is not None}
    steps = [s for s in algorithm.flow if _applies(s, values, genes)]
    withheld += [s.text for s in steps if s.action == "dose-clinically"]
    if withheld:
        return DoseDecision(algorithm, inputs, withheld=list(dict.fromkeys(withheld)), steps=steps)
    weekly = weekly_dose(algorithm, values)
    factors = [s.factor for s in steps if s.action == "adjust" and s.factor]
    low, high = weekly, weekly
    for f_low, f_high in factors:
        low, high = low * f_low, high * f_high
    return DoseDecision(algorithm, inputs, weekly_mg=weekly, weekly_range_mg=(low, high) if factors else None,
                        steps=steps)


def _input_names(algorithm: DosingAlgorithm) -> list[str]:
    return [t.input for t in algorithm.numeric] + [t.input for t in algorithm.categorical]


def _known(algorithm: DosingAlgorithm, name: str) -> bool:
    return name in _input_names(algorithm)


def _outside_the_algorithm(algorithm: DosingAlgorithm, by_name: dict[str, InputValue]) -> list[str]:
    """A categorical value the algorithm has no coefficient for (CYP2C9 *1/*8) gives no number."""
    out = []
    for cat in algorithm.categorical:
        given = by_name.get(cat.input)
        if given is None or given.value is None:
            continue
        if str(given.value) not in cat.coefficients:
            out.append(f"{cat.input} {given.value} is not a value of the {algorithm.name} "
                       f"(it knows {', '.join(cat.coefficients)})")
    return out


def _applies(step: FlowStep, values: dict[str, float | str], genes: PatientGenes) -> bool:
    if step.race and values.get("race") not in step.race:
        return False
    if step.cyp2c9_phenotypes and genes.phenotypes.get("CYP2C9") not in step.cyp2c9_phenotypes:
        return False
    if step.cyp2c9_diplotypes and genes.diplotypes.get("CYP2C9") not in step.cyp2c9_diplotypes:
        return False
    if step.vkorc1 and values.get("VKORC1") not in step.vkorc1:
        return False
    return all(genes.alleles.get(gene, set()) & set(alleles) for gene, alleles in step.carries.items())
