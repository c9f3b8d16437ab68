"""`cds explain` says what it could not decide (issue 9): contradicting statements for one gene are a
conflict, as in the FHIR pipeline, and a phenotype reported without its activity score says that the
score decides between CPIC's recommendations. `cds explain` runs as a real process.
(The workbench's "try a patient": tests/workbench/test_workbench_scores_conflicts.py.)"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

from pgx_paths import CPIC, REPO


def cds(*args):
    return subprocess.run([sys.executable, "-m", "cds.cli", *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def _release(drug, gene, score):
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["drugname"] == drug and json.loads(row["lookupkey_json(reconstructed)"]) == {gene: score}:
                return row
    raise AssertionError(f"no CPIC 1.54 recommendation for {drug} {gene} {score}")


# --- conflicts ---------------------------------------------------------------------------------

def test_explain_json_names_a_conflict_and_gives_no_genotype_based_recommendation():
    result = cds("explain", "--genotype", "CYP2C19=*1/*1", "--genotype", "CYP2C19=*2/*2",
                 "--genotype", "CYP2D6=*1/*1", "--drug", "clopidogrel", "--drug", "codeine", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (conflict,) = out["conflicts"]
    assert conflict["gene"] == "CYP2C19" and conflict["drugs"] == ["clopidogrel"]
    assert conflict["statements"] == ["*1/*1 (Normal Metabolizer)", "*2/*2 (Poor Metabolizer)"]
    assert "no genotype-based recommendation" in conflict["message"]
    assert "CYP2C19" not in out["phenotypes"]                        # not settled as Normal Metabolizer
    assert [r["drug"] for r in out["recommendations"]] == ["codeine"]  # the other gene is unaffected


def test_explain_text_says_the_conflict_plainly():
    result = cds("explain", "--genotype", "CYP2C19=*1/*1", "--genotype", "CYP2C19=*2/*2", "--drug", "clopidogrel")
    assert result.returncode == 0, result.stderr
    assert "Conflicts" in result.stdout
    assert "*1/*1 (Normal Metabolizer); *2/*2 (Poor Metabolizer)" in result.stdout
    assert "no genotype-based recommendation for CYP2C19: its results conflict" in result.stdout
    assert "Normal Metabolizer [lookup" not in result.stdout


def test_statements_that_agree_are_no_conflict():
    # a diplotype and the phenotype it means; a phenotype and one of its scores
    result = cds("explain", "--genotype", "CYP2C19=*2/*2", "--genotype", "CYP2C19=Poor Metabolizer",
                 "--genotype", "DPYD=Poor Metabolizer", "--genotype", "DPYD=score:0.5",
                 "--drug", "clopidogrel", "--drug", "fluorouracil", "--json")
    out = json.loads(result.stdout)
    assert out["conflicts"] == [] and out["score_decides"] == []
    fluorouracil = [r for r in out["recommendations"] if r["drug"] == "fluorouracil"]
    assert [r["lookup_key"] for r in fluorouracil] == [{"DPYD": "0.5"}]


def test_a_phenotype_and_a_score_of_another_phenotype_conflict():
    result = cds("explain", "--genotype", "DPYD=Poor Metabolizer", "--genotype", "DPYD=score:2.0",
                 "--drug", "fluorouracil", "--json")
    out = json.loads(result.stdout)
    assert [c["gene"] for c in out["conflicts"]] == ["DPYD"] and out["recommendations"] == []


# --- a phenotype without its score -------------------------------------------------------------

def test_explain_json_labels_each_score_and_says_the_score_decides():
    result = cds("explain", "--genotype", "DPYD=Poor Metabolizer", "--drug", "fluorouracil", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    recs = out["recommendations"]
    assert [r["score"] for r in recs] == ["0.0", "0.5"]
    for r in recs:
        source = _release("fluorouracil", "DPYD", r["score"])
        assert r["id"] == f"cpic-{source['id']}" and r["matched_by"] == "phenotype"
        assert r["classification"] == source["classification"]
    (undecided,) = out["score_decides"]
    assert undecided["gene"] == "DPYD" and undecided["phenotype"] == "Poor Metabolizer"
    assert undecided["scores"] == ["0.0", "0.5"] and "activity score decides" in undecided["message"]


def test_explain_text_labels_each_score():
    result = cds("explain", "--genotype", "CYP2C9=Intermediate Metabolizer", "--drug", "phenytoin")
    assert result.returncode == 0, result.stderr
    assert "The activity score decides which one applies" in result.stdout
    assert "CYP2C9 activity score 1.0 —" in result.stdout and "CYP2C9 activity score 1.5 —" in result.stdout
