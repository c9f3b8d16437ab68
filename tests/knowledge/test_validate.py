"""`cds validate` on the shipped knowledge passes; on broken files it names file, line and fault.

Each case copies the knowledge, breaks one thing the way an author might, and runs the real command.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgx_paths import REPO


def run_validate(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cds.cli", "validate", str(root)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def knowledge(tmp_path):
    root = tmp_path / "kb"
    for part in ("guidelines", "rules", "hooks"):
        if (REPO / part).exists():
            shutil.copytree(REPO / part, root / part)
    return root


def test_shipped_knowledge_validates():
    result = run_validate(REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK:")
    # a guideline whose release data gives no PMID is valid, cited by its URL: said as a notice
    assert "cpic-hydralazine-nat2.yaml" in result.stdout and "notice: guideline cpic-hydralazine-nat2 has no PMID" in result.stdout


def _line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    count = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            count += 1
            if count == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def _replace(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


CLOPIDOGREL = "guidelines/cpic/cpic-clopidogrel-cyp2c19.yaml"
CODEINE = "guidelines/cpic/cpic-codeine-cyp2d6.yaml"


def _yaml_syntax(root):
    p = root / "guidelines/genes/CYP2C19.yaml"
    _replace(p, "'*2': {function: No function}", "'*2': {function: No function")
    return p, "'*2': {function: No function", "YAML syntax error"


def _unknown_field(root):
    p = root / CLOPIDOGREL
    _replace(p, "  classification: Strong\n", "  clasification: Strong\n")
    return p, "clasification: Strong", "unknown field 'clasification'"


def _bad_classification(root):
    p = root / CLOPIDOGREL
    _replace(p, "  classification: Strong\n", "  classification: Very strong\n")
    return p, "classification: Very strong", "classification"


def _unknown_gene(root):
    p = root / CODEINE
    _replace(p, "lookup: {CYP2D6: '0.0'}", "lookup: {CYP2D7: '0.0'}")
    return p, "CYP2D7", "gene 'CYP2D7'"


def _phenotype_not_producible(root):
    p = root / CLOPIDOGREL
    _replace(p, "lookup: {CYP2C19: Poor Metabolizer}", "lookup: {CYP2C19: Super Metabolizer}")
    return p, "Super Metabolizer", "cannot produce 'Super Metabolizer'"


def _drug_without_rxnorm(root):
    p = root / CLOPIDOGREL
    _replace(p, "  rxnorm: '32968'\n", "")
    return p, "- name: clopidogrel", "has no RxNorm ingredient code"


def _duplicate_recommendation_id(root):
    p = root / CODEINE
    other = (root / CLOPIDOGREL).read_text()
    first_id = other.split("- id: ", 1)[1].split("\n", 1)[0]
    _replace(p, "- id: cpic-", f"- id: {first_id}\n  drug: codeine\n  population: other\n  lookup: {{CYP2D6: '0.0'}}\n"
                               f"  recommendation: x\n  source: test\n- id: cpic-")
    return p, f"- id: {first_id}", f"duplicate recommendation id '{first_id}'"


def _overlapping_recommendations(root):
    p = root / CODEINE
    _replace(p, "recommendations:\n", "recommendations:\n- id: local-overlap\n  drug: codeine\n  population: general\n"
                                      "  lookup: {CYP2D6: '0.0'}\n  recommendation: Something else\n  source: local\n")
    return p, "- id: local-overlap", "overlaps the one at"


def _rule_unknown_recommendation(root):
    p = root / "rules/opioids.yaml"
    _replace(p, "      - when: {CYP2D6: [Poor Metabolizer]}\n", "      - recommendations: [cpic-0000000]\n")
    return p, "recommendations: [cpic-0000000]", "unknown recommendation 'cpic-0000000'"


def _rule_unknown_guideline(root):
    p = root / "rules/statins.yaml"
    _replace(p, "guideline: cpic-simvastatin-slco1b1", "guideline: cpic-simvastatin-slco1b2")
    return p, "guideline: cpic-simvastatin-slco1b2", "unknown guideline 'cpic-simvastatin-slco1b2'"


def _rule_unknown_drug(root):
    p = root / "rules/antiplatelets.yaml"
    _replace(p, "drugs: [clopidogrel]", "drugs: [clopidogrel, clopidogrell]")
    return p, "drugs: [clopidogrel, clopidogrell]", "'clopidogrell' is not a drug of guideline"


def _allele_function_typo(root):
    p = root / "guidelines/genes/CYP2C19.yaml"
    _replace(p, "'*3': {function: No function}", "'*3': {function: No functon}")
    return p, "'*3': {function: No functon}", "'No functon' appears in no phenotype rule"


def _duplicate_key(root):
    p = root / "guidelines/genes/CYP2C19.yaml"
    _replace(p, "  '*3': {function: No function}\n", "  '*3': {function: No function}\n  '*3': {function: No function}\n")
    return p, "'*3': {function: No function}", "duplicate key '*3'"


def _bad_test_genotype(root):
    p = root / "rules/antiplatelets.yaml"
    _replace(p, "genotypes: {CYP2C19: '*2/*2'}", "genotypes: {CYP2C19: 'Hyper Metabolizer'}")
    return p, "Hyper Metabolizer", "is not a phenotype of the gene table"


def _empty_file(root):
    p = root / "rules/empty.yaml"
    p.write_text("")
    return p, None, "the file is empty"


CASES = [_yaml_syntax, _unknown_field, _bad_classification, _unknown_gene, _phenotype_not_producible,
         _drug_without_rxnorm, _duplicate_recommendation_id, _overlapping_recommendations,
         _rule_unknown_recommendation, _rule_unknown_guideline, _rule_unknown_drug, _allele_function_typo,
         _duplicate_key, _bad_test_genotype, _empty_file]


@pytest.mark.parametrize("breaker", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_broken_file_is_reported_with_file_line_and_fault(knowledge, breaker):
    path, needle, fault = breaker(knowledge)
    result = run_validate(knowledge)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    relative = path.relative_to(knowledge).as_posix()
    line = 1 if needle is None else _line_of(path, needle, 2 if breaker is _duplicate_key else 1)
    where = f"{relative}:{line}"
    matching = [l.strip() for l in result.stderr.splitlines() if where + ":" in l]
    assert matching, f"no diagnostic naming {where}\n{result.stderr}"
    assert any(fault in l for l in matching), f"{fault!r} not in {matching}"
