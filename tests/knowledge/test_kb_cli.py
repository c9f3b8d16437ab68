"""The pharmacist's command line: explain, import, test — run as real processes."""
from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys

from pgx_paths import CPIC, REPO


def cds(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cds.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_explain_json_shape_for_two_genes():
    result = cds("explain", "--genotype", "CYP2C19=*2/*17", "--genotype", "CYP2D6=*1/*4", "--drug", "clopidogrel", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"phenotypes", "recommendations", "score_decides", "result_decides", "conflicts", "unreadable"}
    assert out["score_decides"] == [] and out["conflicts"] == []
    # CPIC: *2 no function + *17 increased function → Intermediate Metabolizer; CYP2D6 *1 (1.0) + *4 (0.0) → 1.0
    assert out["phenotypes"]["CYP2C19"] == {"diplotype": "*2/*17", "phenotype": "Intermediate Metabolizer",
                                            "activity_score": None, "lookup_key": "Intermediate Metabolizer"}
    assert out["phenotypes"]["CYP2D6"]["activity_score"] == "1.0"
    assert out["phenotypes"]["CYP2D6"]["phenotype"] == "Intermediate Metabolizer"
    recs = out["recommendations"]
    assert {r["population"] for r in recs} == {"CVI ACS PCI", "CVI non-ACS non-PCI", "NVI"}
    for r in recs:
        assert {"guideline", "drug", "rxnorm", "population", "lookup_key", "classification", "recommendation",
                "implications"} <= set(r)
        assert r["drug"] == "clopidogrel" and r["rxnorm"] == "32968"
        assert r["lookup_key"] == {"CYP2C19": "Intermediate Metabolizer"}


def test_explain_accepts_phenotype_score_and_hla_status():
    result = cds("explain", "--genotype", "CYP2C19=Poor Metabolizer", "--genotype", "CYP2D6=score:1.0",
                 "--genotype", "HLA-B=*57:01 positive", "--drug", "abacavir", "--drug", "amitriptyline", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["phenotypes"]["HLA-B"]["lookup_key"] == "*57:01 positive"
    abacavir = [r for r in out["recommendations"] if r["drug"] == "abacavir"]
    assert len(abacavir) == 1 and abacavir[0]["recommendation"] == "Abacavir is not recommended"
    assert any(r["lookup_key"] == {"CYP2C19": "Poor Metabolizer", "CYP2D6": "1.0"} for r in out["recommendations"])


def test_explain_text_and_unknown_allele_is_indeterminate():
    """An allele no CPIC table knows is no CPIC key (not CPIC's own Indeterminate): no advice rests on it."""
    result = cds("explain", "--genotype", "CYP2C19=*1/*99", "--drug", "clopidogrel", "--population", "CVI ACS PCI")
    assert result.returncode == 0
    assert "Indeterminate" in result.stdout and "allele *99 is not in the CYP2C19 table" in result.stdout
    assert "[lookup: none — not a CPIC key]" in result.stdout
    assert "no genotype-based recommendation for CYP2C19: its result could not be interpreted" in result.stdout


def test_explain_errors_are_sentences_not_tracebacks():
    for args in (["--genotype", "CYP2C19", "--drug", "clopidogrel"],
                 ["--genotype", "FOO=*1/*1", "--drug", "clopidogrel"],
                 ["--genotype", "CYP2C19=Hyper Metabolizer", "--drug", "clopidogrel"],
                 ["--genotype", "CYP2C19=*1/*1", "--drug", "aspirine"]):
        result = cds("explain", *args)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_import_regenerates_the_committed_yaml_exactly(tmp_path):
    result = cds("import", "cpic", str(CPIC), "--out", str(tmp_path / "guidelines"))
    assert result.returncode == 0, result.stderr
    for folder in ("genes", "cpic"):
        committed = REPO / "guidelines" / folder
        generated = tmp_path / "guidelines" / folder
        # VKORC1 and CYP4F2 are written by hand (CPIC's export has no table for them; each line cites its
        # source), and the import leaves them alone
        by_hand = sorted(p.name for p in committed.glob("*.yaml") if p.read_text(encoding="utf-8").startswith("# Written by hand"))
        assert by_hand == (["CYP4F2.yaml", "VKORC1.yaml"] if folder == "genes" else [])
        names = sorted(p.name for p in committed.glob("*.yaml") if p.name not in by_hand)
        assert names == sorted(p.name for p in generated.glob("*.yaml"))
        match, mismatch, errors = filecmp.cmpfiles(committed, generated, names, shallow=False)
        assert mismatch == [] and errors == []
    assert "guidelines written: 87" in result.stdout  # 56 annotations of the export + 31 drugs only release 1.54 has


def test_cds_test_passes_on_the_shipped_rules():
    result = cds("test")
    assert result.returncode == 0, result.stdout
    assert " 0 failed" in result.stdout and "Coverage" in result.stdout
    assert "rules without test cases" not in result.stdout


def test_cds_test_fails_with_a_readable_difference_on_a_broken_rule(tmp_path):
    root = tmp_path / "kb"
    for part in ("guidelines", "rules", "hooks"):
        if (REPO / part).exists():
            shutil.copytree(REPO / part, root / part)
    rule = root / "rules" / "antiplatelets.yaml"
    # a pharmacist downgrades poor metabolizers to a warning but forgets to update the test case
    rule.write_text(rule.read_text().replace(
        "      - when: {CYP2C19: [Poor Metabolizer, Likely Poor Metabolizer]}\n        indicator: critical",
        "      - when: {CYP2C19: [Poor Metabolizer, Likely Poor Metabolizer]}\n        indicator: warning"))
    result = cds("test", str(root))
    assert result.returncode == 1
    assert "FAIL  clopidogrel-cyp2c19: poor metabolizer gets a critical card with both alternatives" in result.stdout
    assert "indicator is warning, expected critical" in result.stdout
    assert "1 failed" in result.stdout


def test_explain_shows_cpic_line_breaks_not_backslash_n():
    """Release 1.54 writes pantoprazole's line break as the two characters backslash-n; we show a line break."""
    result = cds("explain", "--genotype", "CYP2C19=*1/*1", "--drug", "pantoprazole")
    assert result.returncode == 0, result.stderr
    assert "\\n" not in result.stdout
    assert "divided doses.\n    Monitor for efficacy." in result.stdout


def test_an_erratum_the_source_no_longer_has_stops_the_import(tmp_path):
    """The errata list is checked against the release: a correction whose original text is not in its row
    (CPIC fixed it, or the list is wrong) must be reviewed, not silently skipped."""
    errata = (REPO / "guidelines" / "errata" / "cpic.tsv").read_text().replace("avoid ased on G6PD\t", "avoid ased on G6PDX\t", 1)
    (tmp_path / "errata.tsv").write_text(errata)
    result = cds("import", "cpic", str(CPIC), "--out", str(tmp_path / "out"), "--errata", str(tmp_path / "errata.tsv"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "erratum cpic_recommendations_v1.54.tsv row 7589787 drugrecommendation" in result.stderr


def test_explain_takes_the_clinical_inputs_of_the_warfarin_dose():
    args = ["explain", "--genotype", "CYP2C9=*2/*3", "--genotype", "VKORC1=-1639 AA", "--drug", "warfarin",
            "--age", "45", "--height", "182", "--json"]
    without_weight = json.loads(cds(*args, "--medication", "none").stdout)["doses"][0]
    assert without_weight["weekly_mg"] is None and "--weight not given" in without_weight["missing"]
    result = cds(*args, "--weight", "95", "--medication", "none")
    assert result.returncode == 0, result.stderr
    dose = json.loads(result.stdout)["doses"][0]
    assert dose["weekly_mg"] == 13.23 and dose["daily_mg"] == 1.89       # 3.6370² (tests/knowledge/test_warfarin_dosing.py)
    amiodarone = json.loads(cds(*args, "--weight", "95", "--medication", "Amiodarone").stdout)["doses"][0]
    assert amiodarone["inputs"]["amiodarone"] == "yes" and amiodarone["weekly_mg"] < dose["weekly_mg"]
    unknown = json.loads(cds(*args, "--weight", "95").stdout)["doses"][0]
    assert unknown["weekly_mg"] is None          # medications not stated: amiodarone use unknown, no number
