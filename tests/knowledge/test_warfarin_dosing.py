"""The warfarin dose: guidelines/dosing/warfarin-iwpc.yaml against the IWPC paper's coefficients, every
CYP2C9 × VKORC1 combination against an independent implementation's formula, each CPIC flow-chart step,
and the rule that a missing input never yields a number.

The expected values are computed here, independently of cds/dosing, from the pharmacogenetic equation as
two public implementations write it (anzabizadeh/ReiL reil/healthcare/dosing_protocols/warfarin/iwpc.py
at a04d46d, IWPC.pharmacogenetic; michael-s-yao/gabo models/oracle/warfarin.py at 93ea850), both citing
IWPC, N Engl J Med 2009;360:753-64 (PMID 19228618):

  √(weekly dose) = 5.6044 − 0.2614·(age in decades) + 0.0087·height(cm) + 0.0128·weight(kg)
                   − 0.8677·VKORC1 A/G − 1.6974·VKORC1 A/A − 0.4854·VKORC1 unknown
                   − 0.5211·*1/*2 − 0.9357·*1/*3 − 1.0616·*2/*2 − 1.9206·*2/*3 − 2.3312·*3/*3 − 0.2188·CYP2C9 unknown
                   − 0.1092·Asian − 0.2760·Black − 0.1032·missing or mixed + 1.1816·inducer − 0.5503·amiodarone
"""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.dosing.calculate import InputValue, PatientGenes, decide_dose, weekly_dose

# The published coefficients, as both implementations give them (never read from our YAML here).
PUBLISHED = {
    "intercept": 5.6044, "age_decades": -0.2614, "height_cm": 0.0087, "weight_kg": 0.0128,
    "VKORC1": {"-1639 GG": 0.0, "-1639 AG": -0.8677, "-1639 AA": -1.6974},
    "CYP2C9": {"*1/*1": 0.0, "*1/*2": -0.5211, "*1/*3": -0.9357, "*2/*2": -1.0616, "*2/*3": -1.9206, "*3/*3": -2.3312},
    "race": {"white": 0.0, "asian": -0.1092, "black": -0.2760, "missing_or_mixed": -0.1032},
    "enzyme_inducer": {"yes": 1.1816, "no": 0.0}, "amiodarone": {"yes": -0.5503, "no": 0.0},
    "unknown": {"VKORC1": -0.4854, "CYP2C9": -0.2188},
}


def reference_weekly(age: int, height: float, weight: float, vkorc1: str, cyp2c9: str, race: str,
                     inducer: bool, amiodarone: bool) -> float:
    """ReiL's pharmacogenetic formula (age // 10; weekly = (…)²), written out term by term."""
    root = (5.6044 - 0.2614 * (age // 10) + 0.0087 * height + 0.0128 * weight
            - 0.8677 * (vkorc1 == "-1639 AG") - 1.6974 * (vkorc1 == "-1639 AA")
            - 0.5211 * (cyp2c9 == "*1/*2") - 0.9357 * (cyp2c9 == "*1/*3") - 1.0616 * (cyp2c9 == "*2/*2")
            - 1.9206 * (cyp2c9 == "*2/*3") - 2.3312 * (cyp2c9 == "*3/*3")
            - 0.1092 * (race == "asian") - 0.2760 * (race == "black") - 0.1032 * (race == "missing_or_mixed")
            + 1.1816 * inducer - 0.5503 * amiodarone)
    return root ** 2


def inputs(age=45, height=182.0, weight=95.0, vkorc1="-1639 AA", cyp2c9="*2/*3", race="missing_or_mixed",
           inducer="no", amiodarone="no") -> list[InputValue]:
    values = {"age_decades": None if age is None else age // 10, "height_cm": height, "weight_kg": weight,
              "VKORC1": vkorc1, "CYP2C9": cyp2c9, "race": race, "enzyme_inducer": inducer, "amiodarone": amiodarone}
    return [InputValue(k, v, str(v), missing=None if v is not None else f"no {k}") for k, v in values.items()]


@pytest.fixture(scope="module")
def algorithm(kb):
    return kb.dosing["warfarin"]


def test_the_file_holds_the_published_coefficients(algorithm):
    assert algorithm.intercept == PUBLISHED["intercept"]
    assert {t.input: t.coefficient for t in algorithm.numeric} == \
        {k: PUBLISHED[k] for k in ("age_decades", "height_cm", "weight_kg")}
    for term in algorithm.categorical:
        assert term.coefficients == PUBLISHED[term.input], term.input
    assert {n.term.split()[0]: n.coefficient for n in algorithm.not_applied} == PUBLISHED["unknown"]
    assert algorithm.output.transform == "square" and algorithm.output.unit == "mg/week"
    assert algorithm.citation.pmid == "19228618"
    assert {c.name.split(",")[0] for c in algorithm.cross_checks} == {"anzabizadeh/ReiL", "michael-s-yao/gabo"}


@pytest.mark.parametrize("cyp2c9", list(PUBLISHED["CYP2C9"]))
@pytest.mark.parametrize("vkorc1", list(PUBLISHED["VKORC1"]))
def test_every_cyp2c9_vkorc1_combination_matches_the_independent_formula(algorithm, cyp2c9, vkorc1):
    decision = decide_dose(algorithm, inputs(vkorc1=vkorc1, cyp2c9=cyp2c9, race="white"), PatientGenes(), 45)
    expected = reference_weekly(45, 182.0, 95.0, vkorc1, cyp2c9, "white", False, False)
    assert decision.weekly_mg == pytest.approx(expected, abs=1e-9)
    assert decision.daily_mg == pytest.approx(expected / 7, abs=1e-9)


@pytest.mark.parametrize("race", list(PUBLISHED["race"]))
@pytest.mark.parametrize("inducer,amiodarone", [("no", "no"), ("yes", "no"), ("no", "yes"), ("yes", "yes")])
def test_race_groups_and_medications_match_the_independent_formula(algorithm, race, inducer, amiodarone):
    values = dict(vkorc1="-1639 AG", cyp2c9="*1/*1", race=race, inducer=inducer, amiodarone=amiodarone)
    expected = reference_weekly(63, 170.0, 70.0, "-1639 AG", "*1/*1", race, inducer == "yes", amiodarone == "yes")
    got = weekly_dose(algorithm, {i.name: i.value for i in inputs(age=63, height=170.0, weight=70.0, **values)})
    assert got == pytest.approx(expected, abs=1e-9)


def test_the_acceptance_patient_by_hand(algorithm):
    """45 years (decade 4), 182 cm, 95 kg, CYP2C9 *2/*3, VKORC1 T/T (-1639 AA), no race on file (missing or
    mixed), no inducer, no amiodarone: 5.6044 − 1.0456 + 1.5834 + 1.2160 − 1.6974 − 1.9206 − 0.1032 = 3.6370;
    3.6370² = 13.2278 mg/week, 1.89 mg/day."""
    decision = decide_dose(algorithm, inputs(), PatientGenes(phenotypes={"CYP2C9": "Poor Metabolizer"}), 45)
    assert decision.weekly_mg == pytest.approx(3.6370 ** 2, abs=1e-6)
    assert round(decision.weekly_mg, 1) == 13.2 and round(decision.daily_mg, 2) == 1.89
    # CPIC's legend (e): CYP2C9 poor metabolism → consider an alternative agent, beside the number
    assert [s.id for s in decision.steps] == ["cyp2c9-poor-metabolism"]


def test_age_is_the_decade_of_age(algorithm):
    """49 and 40 are both decade 4 (the IWPC data set's "40 - 49"), 50 is decade 5."""
    w40, w49, w50 = (decide_dose(algorithm, inputs(age=a), PatientGenes(), a).weekly_mg for a in (40, 49, 50))
    assert w40 == w49 and w50 < w49


# --- CPIC's flow chart, step by step ------------------------------------------------------------------

def test_african_ancestry_is_dosed_clinically(algorithm):
    decision = decide_dose(algorithm, inputs(race="black"), PatientGenes(), 45)
    assert decision.weekly_mg is None
    assert [s.id for s in decision.steps] == ["african-ancestry"]
    assert any("dose warfarin clinically" in w for w in decision.withheld)


def test_cyp2c9_poor_metabolism_adds_the_alternative_agent_statement(algorithm):
    for phenotype, expected in (("Poor Metabolizer", ["cyp2c9-poor-metabolism"]), ("Intermediate Metabolizer", [])):
        decision = decide_dose(algorithm, inputs(cyp2c9="*1/*3"), PatientGenes(phenotypes={"CYP2C9": phenotype}), 45)
        assert decision.weekly_mg is not None and [s.id for s in decision.steps] == expected


def test_cyp4f2_star3_is_named_and_not_applied(algorithm):
    """CPIC's flow chart adjusts for CYP4F2*3; its size could not be checked against two public sources, so
    the estimate is unchanged and the card says so."""
    carrier = decide_dose(algorithm, inputs(race="white"), PatientGenes(alleles={"CYP4F2": {"*1", "*3"}}), 45)
    plain = decide_dose(algorithm, inputs(race="white"), PatientGenes(alleles={"CYP4F2": {"*1"}}), 45)
    assert carrier.weekly_mg == plain.weekly_mg and carrier.weekly_range_mg is None
    assert [s.id for s in carrier.steps] == ["cyp4f2-star3"] and plain.steps == []


def test_an_adjust_step_gives_a_range(algorithm):
    """The `adjust` action: a factor range multiplies the estimate (a flow-chart percentage, once sourced)."""
    from cds.dosing.models import FlowStep

    step = FlowStep(id="test-adjust", action="adjust", text="t", source="s", carries={"CYP4F2": ["*3"]}, factor=(1.05, 1.10))
    adjusted = algorithm.model_copy(update={"flow": [step]})
    decision = decide_dose(adjusted, inputs(race="white"), PatientGenes(alleles={"CYP4F2": {"*3"}}), 45)
    base = reference_weekly(45, 182.0, 95.0, "-1639 AA", "*2/*3", "white", False, False)
    assert decision.weekly_range_mg == pytest.approx((base * 1.05, base * 1.10))


def test_a_cyp2c9_allele_outside_the_algorithm_gives_no_number(algorithm):
    decision = decide_dose(algorithm, inputs(cyp2c9="*1/*8"), PatientGenes(), 45)
    assert decision.weekly_mg is None and any("CYP2C9 *1/*8 is not a value" in w for w in decision.withheld)


def test_children_get_no_number(algorithm):
    decision = decide_dose(algorithm, inputs(age=12), PatientGenes(), 12)
    assert decision.weekly_mg is None and any("for adults" in w for w in decision.withheld)


# --- a missing input never yields a number --------------------------------------------------------------

NAMES = ["age_decades", "height_cm", "weight_kg", "VKORC1", "CYP2C9", "race", "enzyme_inducer", "amiodarone"]


@settings(max_examples=300, deadline=None)
@given(missing=st.sets(st.sampled_from(NAMES), min_size=1),
       age=st.integers(18, 100), height=st.floats(100, 220), weight=st.floats(30, 200),
       vkorc1=st.sampled_from(list(PUBLISHED["VKORC1"])), cyp2c9=st.sampled_from(list(PUBLISHED["CYP2C9"])),
       race=st.sampled_from(["white", "asian", "missing_or_mixed"]), inducer=st.sampled_from(["yes", "no"]),
       amiodarone=st.sampled_from(["yes", "no"]), drop=st.booleans())
def test_a_missing_input_never_yields_a_number(kb, missing, age, height, weight, vkorc1, cyp2c9, race, inducer,
                                                amiodarone, drop):
    algorithm = kb.dosing["warfarin"]
    given_inputs = inputs(age, height, weight, vkorc1, cyp2c9, race, inducer, amiodarone)
    if drop:        # not gathered at all
        given_inputs = [i for i in given_inputs if i.name not in missing]
    else:           # gathered, with no value and the reason
        given_inputs = [InputValue(i.name, None, "x", missing=f"no {i.name} on file") if i.name in missing else i
                        for i in given_inputs]
    decision = decide_dose(algorithm, given_inputs, PatientGenes(), age)
    assert decision.weekly_mg is None and decision.weekly_range_mg is None and decision.daily_mg is None
    for name in missing:            # every missing input is named
        assert any(name in w for w in decision.withheld), (name, decision.withheld)


def test_the_validator_refuses_a_genotype_the_tables_cannot_produce(tmp_path):
    """A typo in the dosing file (CYP2C9 '*1/*22x') is a file:line message, not a coefficient that never matches."""
    import shutil
    from pathlib import Path

    from cds.errors import KnowledgeError
    from cds.knowledge.loader import load_knowledge

    repo = Path(__file__).resolve().parents[2]
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(repo / part, tmp_path / part)
    path = tmp_path / "guidelines" / "dosing" / "warfarin-iwpc.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("'*3/*3': -2.3312", "'*3/*33x': -2.3312"), encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(tmp_path, use_cache=False)
    assert "warfarin-iwpc.yaml" in str(err.value) and "cannot produce '*3/*33x'" in str(err.value)


def test_inputs_from_fhir_use_the_newest_measurement_within_the_window(kb):
    from cds.dosing.inputs import ClinicalData, read_inputs

    def vital(code, value, unit, when, oid):
        return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1981-06-15",
               "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                              "extension": [{"url": "ombCategory", "valueCoding": {"code": "2028-9"}}]}]}
    vitals = [vital("29463-7", 80, "kg", "2026-01-10", "w-old"), vital("29463-7", 209.4, "[lb_av]", "2026-11-01", "w-new"),
              vital("8302-2", 70, "[in_i]", "2026-05-01", "h"), vital("29463-7", 60, "kg", "2024-01-01", "w-stale"),
              {**vital("29463-7", 50, "kg", "2026-11-30", "w-other"), "subject": {"reference": "Patient/p2"}}]
    got, age = read_inputs(kb.dosing["warfarin"], ClinicalData("Patient/p1", patient, vitals, []), date(2026, 12, 5))
    by = {i.name: i for i in got}
    assert age == 45 and by["age_decades"].value == 4
    assert by["weight_kg"].value == pytest.approx(95.0, abs=0.1) and by["weight_kg"].source == "Observation/w-new"
    assert by["height_cm"].value == pytest.approx(177.8) and by["race"].value == "asian"
    stale, _ = read_inputs(kb.dosing["warfarin"], ClinicalData("Patient/p1", patient, vitals[3:], []), date(2026, 12, 5))
    weight = {i.name: i for i in stale}["weight_kg"]
    assert weight.value is None and weight.missing == "no body weight on file in the last 12 months"
