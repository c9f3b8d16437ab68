"""The clinical inputs of a dosing algorithm, read from the patient's FHIR data (or given by a face's flags).

- age: Patient.birthDate, on the day of the order;
- height and weight: the newest final Observation (LOINC 8302-2 body height, 29463-7 body weight) within the
  algorithm's window (`observation_window_months`, 12 for warfarin), in cm and kg (UCUM cm, m, [in_i]; kg, g,
  [lb_av]); older ones are not used, and the card says there was none in the window;
- race: the US Core race extension's OMB categories; several, another, or none → IWPC's "missing or mixed";
- amiodarone and enzyme inducers: among the patient's active MedicationRequests and MedicationStatements
  and the orders being placed, by RxNorm code (the knowledge base's drugs and products) or by name written in
  the order. An active medication that names nothing readable (a code we cannot resolve and no text) makes
  both unknown: a missing input, never a silent "no".

Each input comes back as an InputValue: its value, how a clinician reads it (with its date and resource), or
why it is missing. Nothing here fetches: the faces gather the resources.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds.dosing.calculate import InputValue, PatientGenes
from cds.dosing.models import DosingAlgorithm
from cds.facts import MedicationOrder
from cds.fhir.resources import patient_key

LOINC = "http://loinc.org"
HEIGHT, WEIGHT = "8302-2", "29463-7"
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
OMB_RACE = {"2106-3": "white", "2028-9": "asian", "2054-5": "black"}      # the IWPC groups; others: missing or mixed
OMB_NAMES = {"2106-3": "White", "2028-9": "Asian", "2054-5": "Black or African American",
             "1002-5": "American Indian or Alaska Native", "2076-8": "Native Hawaiian or Other Pacific Islander"}
RESULT_STATUSES = ("final", "amended", "corrected")
# IWPC's named drugs (its data set's columns "Amiodarone (Cordarone)", "Carbamazepine (Tegretol)", "Phenytoin
# (Dilantin)", "Rifampin or Rifampicin"); carbamazepine and phenytoin also by their CPIC RxNorm codes.
INDUCER_NAMES = ("carbamazepine", "phenytoin", "rifampin", "rifampicin")
AMIODARONE_NAMES = ("amiodarone",)
_UNITS = {"height_cm": {"cm": 1.0, "m": 100.0, "[in_i]": 2.54, "in": 2.54},
          "weight_kg": {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237}}
_WORDS = {"height_cm": "body height", "weight_kg": "body weight"}
_UNIT_WORD = {"height_cm": "cm", "weight_kg": "kg"}


@dataclass
class ClinicalData:
    """What a face gathered for the clinical inputs. `None`: not gathered (a missing input, named)."""

    patient_ref: str
    patient: dict[str, Any] | None
    vitals: list[Any] | None                          # Observations (searchsets, resources)
    medications: list[MedicationOrder] | None         # active medications and the orders being placed, read
    problems: dict[str, str] = field(default_factory=dict)   # input → why it could not be gathered


def age_years(birth_date: Any, today: date) -> int | None:
    if not isinstance(birth_date, str) or len(birth_date) < 10:
        return None            # a year or year-month alone does not give the age on the day
    try:
        born = date.fromisoformat(birth_date[:10])
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def read_inputs(algorithm: DosingAlgorithm, data: ClinicalData, today: date) -> tuple[list[InputValue], int | None]:
    """The algorithm's clinical inputs (not the genotypes) and the patient's age in years."""
    age, age_input = _age(data, today)
    inputs = [age_input,
              _measurement("height_cm", HEIGHT, algorithm, data, today),
              _measurement("weight_kg", WEIGHT, algorithm, data, today),
              _race(data)]
    inputs += _medication_inputs(data)
    return inputs, age


def genotype_inputs(algorithm: DosingAlgorithm, interpretations: dict[str, list[Any]],
                    unreadable: dict[str, list[str]]) -> tuple[list[InputValue], PatientGenes]:
    """VKORC1 and CYP2C9 as the algorithm reads them, and what the flow chart reads of every gene."""
    genes = PatientGenes()
    inputs = []
    for gene in algorithm.genes:
        usable = [i for i in interpretations.get(gene, []) if not i.indeterminate]
        if usable:
            first = usable[0]
            genes.diplotypes[gene] = first.diplotype or ""
            genes.phenotypes[gene] = first.phenotype
            genes.alleles[gene] = set((first.diplotype or "").split("/")) if first.diplotype else set()
        if gene not in {t.input for t in algorithm.categorical}:
            continue
        inputs.append(_genotype_input(gene, usable, interpretations.get(gene, []), unreadable.get(gene, [])))
    return inputs, genes


def _genotype_input(gene: str, usable: list[Any], all_: list[Any], unreadable: list[str]) -> InputValue:
    if not usable:
        why = (f"the {gene} result on file could not be interpreted ({'; '.join(unreadable)})" if unreadable or all_
               else f"no {gene} result on file")
        return InputValue(gene, None, why, missing=why)
    first = usable[0]
    value = first.lookup.get(gene) if gene == "VKORC1" else first.diplotype
    if not first.diplotype:
        why = f"the {gene} result on file states a phenotype ({first.phenotype}), not the genotype the algorithm needs"
        return InputValue(gene, None, why, missing=why)
    shown = f"{gene} {first.diplotype}" + (f" ({value})" if value != first.diplotype else "")
    return InputValue(gene, value, shown, source=", ".join(first.source_ids) or None)


def _age(data: ClinicalData, today: date) -> tuple[int | None, InputValue]:
    if data.patient is None:
        why = data.problems.get("patient") or "the Patient resource was not available, so the age is not known"
        return None, InputValue("age_decades", None, why, missing=why)
    birth = data.patient.get("birthDate")
    age = age_years(birth, today)
    if age is None:
        why = "no full birth date on the Patient resource, so the age is not known"
        return None, InputValue("age_decades", None, why, missing=why)
    return age, InputValue("age_decades", age // 10, f"{age} years (born {birth}; decade {age // 10})",
                           source=_ref(data.patient))


def _measurement(name: str, code: str, algorithm: DosingAlgorithm, data: ClinicalData,
                 today: date) -> InputValue:
    window = algorithm.observation_window_months
    if data.vitals is None:
        why = data.problems.get("vitals") or f"{_WORDS[name]} could not be read (no vital signs were gathered)"
        return InputValue(name, None, why, missing=why)
    since = _months_before(today, window)
    found = [m for m in _observations(data.vitals, code, name, data.patient_ref) if since <= m[0] <= today]
    if not found:
        why = f"no {_WORDS[name]} on file in the last {window} months"
        return InputValue(name, None, why, missing=why)
    when, value, unit, ref = max(found, key=lambda m: m[0])
    shown = f"{value:g} {_UNIT_WORD[name]} on {when.isoformat()}" + (f" (recorded as {unit})" if unit else "")
    return InputValue(name, round(value, 1), shown, source=ref)


def _observations(resources: Iterable[Any], code: str, name: str,
                  patient_ref: str) -> list[tuple[date, float, str | None, str | None]]:
    out = []
    for obs in _resources(resources, "Observation"):
        if obs.get("status") not in RESULT_STATUSES or not _has_code(obs.get("code"), LOINC, code):
            continue
        subject = (obs.get("subject") or {}).get("reference")
        if isinstance(subject, str) and not _same_patient(subject, patient_ref):
            continue      # another patient's measurement is never this patient's input
        when = _date(obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("start")
                     or obs.get("issued"))
        quantity = obs.get("valueQuantity") or {}
        factor = _UNITS[name].get(str(quantity.get("code") or quantity.get("unit") or ""))
        if when is None or factor is None or not isinstance(quantity.get("value"), (int, float)):
            continue
        unit = quantity.get("code") or quantity.get("unit")
        converted = float(quantity["value"]) * factor
        out.append((when, converted, None if factor == 1.0 else str(unit), _ref(obs)))
    return out


def _race(data: ClinicalData) -> InputValue:
    if data.patient is None:
        why = "the Patient resource was not available, so the race group is not known"
        return InputValue("race", None, why, missing=why)
    codes = sorted({c for ext in data.patient.get("extension") or []
                    if isinstance(ext, dict) and ext.get("url") == US_CORE_RACE
                    for sub in ext.get("extension") or [] if isinstance(sub, dict) and sub.get("url") == "ombCategory"
                    for c in [(sub.get("valueCoding") or {}).get("code")] if isinstance(c, str)})
    groups = {OMB_RACE.get(c) for c in codes}
    if len(codes) == 1 and None not in groups:
        group = next(iter(groups))
        return InputValue("race", group, f"{OMB_NAMES[codes[0]]} (US Core race, OMB {codes[0]})",
                          source=_ref(data.patient))
    named = ", ".join(OMB_NAMES.get(c, c) for c in codes)
    why = (f"{named}: IWPC's 'missing or mixed' group" if codes else
           "no race on the Patient resource (US Core race extension): IWPC's 'missing or mixed' group")
    return InputValue("race", "missing_or_mixed", why, source=_ref(data.patient))


def _medication_inputs(data: ClinicalData) -> list[InputValue]:
    if data.medications is None:
        why = data.problems.get("medications") or ("the active medications could not be read (none were gathered), so "
                                                  "amiodarone and enzyme-inducer use are not known")
        return [InputValue("amiodarone", None, why, missing=why), InputValue("enzyme_inducer", None, why, missing=why)]
    unknown = [o for o in data.medications
               if o.resolution != "not-this-patient" and not _readable(o) and not o.ingredients]
    if unknown:
        listed = ", ".join(o.order_id or ", ".join(o.codes) or "an order" for o in unknown)
        why = (f"an active medication names no drug we can read ({listed}), so amiodarone and enzyme-inducer use "
               "are not known")
        return [InputValue("amiodarone", None, why, missing=why), InputValue("enzyme_inducer", None, why, missing=why)]
    count = sum(1 for o in data.medications if o.resolution != "not-this-patient")
    return [_medication_input("amiodarone", AMIODARONE_NAMES, data.medications, count),
            _medication_input("enzyme_inducer", INDUCER_NAMES, data.medications, count)]


def _medication_input(name: str, drugs: tuple[str, ...], orders: list[MedicationOrder], count: int) -> InputValue:
    hits = [(o, d) for o in orders if o.resolution != "not-this-patient" for d in drugs
            if d in {i.name.lower() for i in o.ingredients} or d in _names_of(o)]
    if hits:
        shown = "; ".join(f"{d} ({o.display or o.order_id or 'an order'})" for o, d in hits)
        sources = ", ".join(sorted({o.order_id for o, _ in hits if o.order_id}))
        return InputValue(name, "yes", shown, source=sources or None)
    words = {"amiodarone": "no amiodarone", "enzyme_inducer": "no carbamazepine, phenytoin or rifampin"}[name]
    return InputValue(name, "no", f"{words} among {count} active medication(s) and orders read")


def _texts(order: MedicationOrder) -> list[str]:
    return [t for t in [order.display or ""] + [c[5:] for c in order.codes if c.startswith("text:")] if t.strip()]


def _readable(order: MedicationOrder) -> bool:
    """The order says what it is in words (so a drug it does not name is not in it)."""
    return bool(_texts(order))


def _names_of(order: MedicationOrder) -> set[str]:
    """The IWPC drugs written as whole words in what the order says of itself (display, text codes)."""
    return {drug for drug in INDUCER_NAMES + AMIODARONE_NAMES
            if any(re.search(rf"(?<![a-z]){drug}(?![a-z])", t, re.I) for t in _texts(order))}


def _same_patient(reference: str, patient_ref: str) -> bool:
    return patient_key(reference) == patient_key(patient_ref)


def _months_before(today: date, months: int) -> date:
    year, month = divmod(today.year * 12 + today.month - 1 - months, 12)
    day = min(today.day, 28)
    return date(year, month + 1, day)


def _date(text: Any) -> date | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _has_code(concept: Any, system: str, code: str) -> bool:
    return isinstance(concept, dict) and any(isinstance(c, dict) and c.get("system") == system and c.get("code") == code
                                             for c in concept.get("coding") or [])


def _ref(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) else None


def _resources(items: Iterable[Any], rtype: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("resourceType") == "Bundle":
            out += _resources([e.get("resource") for e in item.get("entry") or [] if isinstance(e, dict)], rtype)
        elif item.get("resourceType") == rtype:
            out.append(item)
    return out


def stated_inputs(age: int | None, height_cm: float | None, weight_kg: float | None, race: str | None,
                  medications: list[str] | None) -> tuple[list[InputValue], int | None]:
    """The clinical inputs as a pharmacist states them (`cds explain --age --height --weight --race
    --medication`, the workbench's try-a-patient). Not stated: missing, named by its option. `medications`
    None: not stated (amiodarone and inducer use unknown); [] or ['none']: none of them."""
    def value(name: str, given: float | None, shown: str, option: str) -> InputValue:
        if given is None:
            return InputValue(name, None, f"{option} not given", missing=f"{option} not given")
        return InputValue(name, round(float(given), 1), shown)

    inputs = [InputValue("age_decades", None, "--age not given", missing="--age not given") if age is None else
              InputValue("age_decades", age // 10, f"{age} years (decade {age // 10})"),
              value("height_cm", height_cm, f"{height_cm:g} cm" if height_cm is not None else "", "--height"),
              value("weight_kg", weight_kg, f"{weight_kg:g} kg" if weight_kg is not None else "", "--weight")]
    group = race or "missing_or_mixed"
    inputs.append(InputValue("race", group, group.replace("_", " ") + ("" if race else " (--race not given: IWPC's "
                                                                        "'missing or mixed' group)")))
    if medications is None:
        why = "--medication not given, so amiodarone and enzyme-inducer use are not known (--medication none: none)"
        inputs += [InputValue("amiodarone", None, why, missing=why),
                   InputValue("enzyme_inducer", None, why, missing=why)]
    else:
        names = {m.strip().lower() for m in medications if m.strip().lower() != "none"}
        for name, drugs in (("amiodarone", AMIODARONE_NAMES), ("enzyme_inducer", INDUCER_NAMES)):
            hits = sorted(names & set(drugs))
            inputs.append(InputValue(name, "yes" if hits else "no",
                                     ", ".join(hits) if hits else "not among --medication"))
    return inputs, age
