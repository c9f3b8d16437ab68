"""The compiled engine: sessions, concurrency, phenotype-only results, populations, errors."""
from __future__ import annotations

import threading

import pytest

from cds.engine import Engine
from cds.errors import CdsError
from cds.explain import parse_genotype_args


def _patient(engine, **genotypes):
    return parse_genotype_args(engine, [f"{g.replace('_', '-')}={v}" for g, v in genotypes.items()])


class RecordingEngine(Engine):
    """Remembers the session ids it used, so the test can ask durable-rules about them afterwards."""

    def __init__(self, compiled):
        self.sessions = []
        super().__init__(compiled)
        self.memoize(0)      # every evaluation goes to durable-rules, remembered or not

    def _new_session_id(self):
        sid = super()._new_session_id()
        self.sessions.append(sid)
        return sid


def test_each_evaluation_runs_in_its_own_session_which_is_deleted(engine):
    recording = RecordingEngine(engine.compiled)
    recording.sessions.clear()
    evaluation = recording.evaluate(_patient(recording, CYP2C19="*2/*2"), ["clopidogrel", "citalopram"])
    assert len(recording.sessions) == 2 and len(set(recording.sessions)) == 2
    assert evaluation.drugs[0].matches
    for drug, sid in zip(["clopidogrel", "citalopram"], recording.sessions):
        assert not recording.session_exists(drug, sid)


def test_a_session_that_matched_nothing_is_deleted_too(engine):
    recording = RecordingEngine(engine.compiled)
    recording.sessions.clear()
    recording.evaluate({}, ["ivacaftor"])   # no CFTR result and no "No Result" recommendation for it
    assert not recording.session_exists("ivacaftor", recording.sessions[0])


def test_remembered_answers_equal_the_answers_durable_rules_gives_each_time(engine):
    asserting = RecordingEngine(engine.compiled)
    remembering = Engine(engine.compiled)
    for genotypes, drugs in [({"CYP2C19": "*2/*2"}, ["clopidogrel", "citalopram"]),
                             ({"CYP2D6": "*1/*1x2"}, ["codeine", "tramadol"]),
                             ({"DPYD": "Poor Metabolizer"}, ["fluorouracil"]),
                             ({}, ["abacavir", "ivacaftor"])]:
        patient = _patient(engine, **{k.replace("-", "_"): v for k, v in genotypes.items()})
        for _ in range(2):   # the second time from the memo
            expected = asserting.evaluate(patient, drugs)
            got = remembering.evaluate(patient, drugs)
            assert [(d.drug, [m.recommendation.id for m in d.matches], [p.gene for p in d.pretests]) for d in got.drugs] \
                == [(d.drug, [m.recommendation.id for m in d.matches], [p.gene for p in d.pretests]) for d in expected.drugs]
    assert any(d.matches for d in remembering.evaluate(_patient(engine, CYP2C19="*2/*2"), ["clopidogrel"]).drugs)


def test_concurrent_evaluations_equal_sequential_ones(engine):
    cases = [
        ({"CYP2C19": "*2/*2"}, ["clopidogrel"]),
        ({"CYP2C19": "*1/*17", "CYP2D6": "*1/*4"}, ["amitriptyline"]),
        ({"CYP2D6": "*1/*1x2"}, ["codeine", "tramadol"]),
        ({"HLA-B": "*57:01 positive"}, ["abacavir"]),
        ({"TPMT": "*3A/*3A", "NUDT15": "*1/*1"}, ["azathioprine", "mercaptopurine"]),
        ({"SLCO1B1": "*5/*5", "ABCG2": "rs2231142 reference (G)/rs2231142 variant (T)"}, ["rosuvastatin"]),
        ({"CYP2C9": "*1/*3", "HLA-B": "*15:02 negative"}, ["phenytoin"]),
        ({"DPYD": "score:1.0"}, ["fluorouracil", "capecitabine"]),
    ]

    def run(case):
        genotypes, drugs = case
        evaluation = engine.evaluate(_patient(engine, **{k.replace("-", "_"): v for k, v in genotypes.items()}), drugs)
        return [(d.drug, sorted(m.recommendation.id for m in d.matches)) for d in evaluation.drugs]

    expected = [run(c) for c in cases]
    assert all(any(ids for _, ids in e) for e in expected)
    results: dict[int, list] = {}
    errors = []

    def worker(n):
        try:
            for i in range(150):
                k = (n + i) % len(cases)
                results.setdefault(n, []).append((k, run(cases[k])))
        except Exception as err:  # pragma: no cover - a failure is reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(len(v) for v in results.values()) == 8 * 150
    for outcomes in results.values():
        for k, outcome in outcomes:
            assert outcome == expected[k]


def test_phenotype_only_result_gives_each_scores_advice_where_they_differ(engine):
    # CYP2D6 poor metabolizer is one score (0.0): codeine has one recommendation for it
    pm = engine.evaluate(_patient(engine, CYP2D6="Poor Metabolizer"), ["codeine"]).drugs[0]
    assert [(m.matched_by, m.score) for m in pm.matches] == [("phenotype", None)]
    assert pm.matches[0].recommendation.lookup == {"CYP2D6": "0.0"}
    # CYP2D6 intermediate metabolizer spans scores 0.25–1.0; for tamoxifen CPIC classifies them
    # differently (Moderate at 0.25, Optional at 1.0), so the phenotype alone gives each score's advice
    low = engine.evaluate(_patient(engine, CYP2D6="score:0.25"), ["tamoxifen"]).drugs[0].matches
    high = engine.evaluate(_patient(engine, CYP2D6="score:1.0"), ["tamoxifen"]).drugs[0].matches
    assert {m.recommendation.classification for m in low + high} == {"Optional", "Moderate"}
    im = engine.evaluate(_patient(engine, CYP2D6="Intermediate Metabolizer"), ["tamoxifen"]).drugs[0].matches
    assert [m.score for m in im] == ["0.25", "0.5", "0.75", "1.0"]
    assert {m.recommendation.id for m in low + high} <= {m.recommendation.id for m in im}


def test_population_selects_one_recommendation(engine):
    patient = _patient(engine, CYP2C19="*2/*2")
    everything = engine.evaluate(patient, ["clopidogrel"]).drugs[0].matches
    assert {m.recommendation.population for m in everything} == {"CVI ACS PCI", "CVI non-ACS non-PCI", "NVI"}
    one = engine.evaluate(patient, ["clopidogrel"], population="NVI").drugs[0].matches
    assert [m.recommendation.population for m in one] == ["NVI"]


def test_drugs_by_rxnorm_code_and_unknown_drugs(engine):
    assert engine.evaluate({}, ["32968"]).drugs[0].drug == "clopidogrel"
    with pytest.raises(CdsError, match="unknown drug 'aspirine'"):
        engine.evaluate({}, ["aspirine"])


def test_no_result_recommendations_apply_when_a_gene_is_missing(engine):
    # phenytoin: CPIC has recommendations keyed on HLA-B "No Result" with a CYP2C9 score
    d = engine.evaluate(_patient(engine, CYP2C9="*1/*1"), ["phenytoin"], population="PHT naive").drugs[0]
    assert [m.recommendation.lookup for m in d.matches] == [{"CYP2C9": "2.0", "HLA-B": "No Result"}]


def test_a_diplotype_and_a_phenotype_that_agree_are_one_result_in_either_order(engine):
    from cds.pipeline import patient_facts

    geno = {"resourceType": "Observation", "id": "g", "status": "final", "effectiveDateTime": "2024-01-01",
            "code": {"text": "CYP2D6 genotype"}, "valueString": "*1/*4"}
    pheno = {"resourceType": "Observation", "id": "p", "status": "final", "effectiveDateTime": "2024-01-01",
             "code": {"text": "CYP2D6 phenotype"}, "valueString": "Intermediate Metabolizer"}
    contrary = dict(pheno, id="q", valueString="Poor Metabolizer")
    for resources in ([geno, pheno], [pheno, geno]):
        facts = patient_facts(engine, resources)
        assert facts.conflicts == {} and len(facts.interpretations["CYP2D6"]) == 2
    assert patient_facts(engine, [geno, contrary]).conflicts == {"CYP2D6": ["Observation/g", "Observation/q"]}
