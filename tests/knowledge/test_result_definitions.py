"""Function pairs CPIC defines only in the words of its result texts (release 1.54): TPMT and NUDT15
"Decreased function" (the 2025–26 thiopurine update) and NAT2, which has no diplotype table at all.

Every pair is read from the sentence "This result signifies that the patient has …" of
../shared/cpic/v1.54/cpic_gene_results_cds_v1.54.tsv (tests/knowledge/cpic_sources.py, not the
importer), and every diplotype of the release's alleles is interpreted against it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations_with_replacement

import pytest

from cpic_sources import read_release, release_alleles, release_recommendation_texts, result_definitions
from pgx_paths import REPO


@pytest.mark.parametrize("gene", ["TPMT", "NUDT15", "NAT2"])
def test_every_diplotype_gets_the_phenotype_of_its_definition(kb, gene):
    alleles = release_alleles(gene)
    definitions = result_definitions(gene)
    functions = sorted(set(alleles.values()))
    # CPIC defines every pair of the functions its alleles have: nothing is left to us
    assert set(definitions) == {tuple(sorted(p)) for p in combinations_with_replacement(functions, 2)}
    interpreter = kb.interpreters[gene]
    checked = with_decreased = 0
    for a, b in combinations_with_replacement(sorted(alleles), 2):
        pair = tuple(sorted((alleles[a], alleles[b])))
        expected, row_id = definitions[pair]
        got = interpreter.from_diplotype(f"{a}/{b}")
        assert got.phenotype == expected, (f"{a}/{b}", pair, row_id)
        if expected == "Indeterminate":
            assert got.reason, f"{a}/{b}: an Indeterminate answer says why"
        checked += 1
        with_decreased += "Decreased function" in pair
    print(f"{gene}: {checked} diplotypes of release 1.54 alleles agree with CPIC's result definitions "
          f"({with_decreased} with a decreased function allele)")
    assert with_decreased > 0


def test_each_new_pair_rule_cites_its_definition_row(kb):
    for gene in ("TPMT", "NUDT15", "NAT2"):
        definitions = result_definitions(gene)
        for rule in kb.genes[gene].phenotype_rules:
            if rule.source:
                phenotype, row_id = definitions[tuple(sorted(rule.functions))]
                assert rule.phenotype == phenotype and f"id {row_id}" in rule.source, (gene, rule)
        assert not kb.genes[gene].functions_without_rule


def test_explain_nudt15_decreased_with_no_function_gives_cpic_strong_dose_reduction():
    """NUDT15 *3 (no function) + *5 (decreased) is a Poor Metabolizer: CPIC's Strong 10-fold reduction."""
    result = subprocess.run([sys.executable, "-m", "cds.cli", "explain", "--genotype", "NUDT15=*3/*5",
                             "--genotype", "TPMT=*1/*1", "--drug", "mercaptopurine", "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["phenotypes"]["NUDT15"]["phenotype"] == "Poor Metabolizer"
    expected = [r for r in read_release("cpic_recommendations_v1.54.tsv") if r["drugname"] == "mercaptopurine"
                and json.loads(r["lookupkey_json(reconstructed)"]) == {"NUDT15": "Poor Metabolizer", "TPMT": "Normal Metabolizer"}]
    assert len(expected) == 1 and expected[0]["classification"] == "Strong"
    (rec,) = out["recommendations"]
    assert rec["classification"] == "Strong"
    assert rec["recommendation"] == release_recommendation_texts()[expected[0]["id"]]
    assert "Reduce starting dose by 10-fold" in rec["recommendation"]
