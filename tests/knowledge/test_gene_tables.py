"""Our interpretation of every diplotype in CPIC's gene tables agrees with CPIC's phenotype,
activity score and lookup key, except where CPIC release 1.54 changed an allele's function.

Expected values come from the source files in ../shared/cpic, never from our own YAML. The changes
of release 1.54 are listed here one by one (CPIC_1_54_FUNCTION_CHANGES); for the diplotypes they
touch, the expected phenotype is CPIC's own function-pair rule (read from the 2024 table) applied to
the new function, else the pair's phenotype in the release's result definitions (TPMT/NUDT15
"Decreased function"), else Indeterminate. Alleles CPIC deleted (CPIC_1_54_DELETED, from its change
log) are no longer in our tables: diplotypes with them are Indeterminate, except those the change log renamed
or folded into another allele (CPIC_1_54_RENAMED), which are read as that allele.
"""
from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from cpic_sources import read_release, result_definitions
from pgx_paths import CPIC

# gene, allele, function in the 2024 export, function in CPIC database release 1.54
CPIC_1_54_FUNCTION_CHANGES = [
    ("CYP2B6", "*22", "Increased function", "Uncertain function"),
    ("CYP2B6", "*23", "Unknown function", "Uncertain function"),
    ("CYP2B6", "*24", "No function", "Uncertain function"),
    ("CYP2B6", "*25", "Unknown function", "Uncertain function"),
    ("CYP2B6", "*35", "No function", "Uncertain function"),
    ("CYP2B6", "*37", "No function", "Decreased function"),
    ("NUDT15", "*4", "Uncertain function", "No function"),
    ("NUDT15", "*5", "Uncertain function", "Decreased function"),
    ("NUDT15", "*6", "Uncertain function", "No function"),
    ("NUDT15", "*7", "Uncertain function", "No function"),
    ("NUDT15", "*8", "Uncertain function", "Decreased function"),
    ("RYR1", "c.1209C>G", "Malignant Hyperthermia associated", "Uncertain function"),
    ("RYR1", "c.7522C>G", "Malignant Hyperthermia associated", "Uncertain function"),
    ("RYR1", "c.14387A>G", "Malignant Hyperthermia associated", "Uncertain function"),
    ("RYR1", "c.14693T>C", "Malignant Hyperthermia associated", "Uncertain function"),
    ("SLCO1B1", "*39", "Uncertain function", "No function"),
    ("SLCO1B1", "*41", "Uncertain function", "No function"),
    ("SLCO1B1", "*45", "Unknown function", "No function"),
] + [("TPMT", a, "Uncertain function", "No function") for a in
     ("*5", "*6", "*7", "*10", "*13", "*16", "*17", "*18", "*20", "*21", "*22", "*25", "*26", "*27", "*28",
      "*31", "*33", "*34", "*37", "*39")] + [
    ("TPMT", "*8", "Uncertain function", "Decreased function"),
    ("TPMT", "*30", "Unknown function", "Uncertain function"),
    ("TPMT", "*38", "Unknown function", "No function"),
]


# gene, allele: in the 2024 export, not in release 1.54's allele table, deleted per cpic_data_changelog.tsv
# renamed or folded into another allele: a result naming the old one is read as the new one (its table alias)
CPIC_1_54_RENAMED = {
    ("G6PD", "Telti/Kobe"): "Telti, Kobe",   # 2023-09-22: renamed (the slash collided with diplotype syntax)
    ("MT-RNR1", "m.930A>G"): "m.930G>A",     # 2025-10-27: changed to m.930G>A (G is the reference)
    ("NUDT15", "*2"): "*3",                  # 2026-01-29: *2 has become a sub-allele of *3
}
CPIC_1_54_DELETED = list(CPIC_1_54_RENAMED) + [("SLCO1B1", a) for a in ("*3", "*7", "*12", "*13", "*38", "*46")]  # 2025-10-14: DELETED HAPLOTYPE

DEFINED_BY_RESULT_TEXTS = ("TPMT", "NUDT15")  # pairs with "Decreased function": only the 1.54 result texts define them


def _gene_files():
    return sorted((CPIC / "genes").glob("*.json"))


def _release_alleles():
    with (CPIC / "v1.54" / "cpic_alleles_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        return {(r["gene"], r["allele"]): r for r in csv.DictReader(f, delimiter="\t")}


def test_the_listed_changes_are_exactly_what_release_1_54_changed():
    release = _release_alleles()
    found = []
    for path in _gene_files():
        table = json.loads(path.read_text())
        if table.get("activityValues"):
            continue  # activity-score genes: values unchanged (checked below)
        for allele, old in table["haplotypes"].items():
            new = release.get((table["gene"], allele))
            if new and new["clinical_functional_status"] and new["clinical_functional_status"].lower() != old.lower():
                found.append((table["gene"], allele, old, new["clinical_functional_status"]))
    assert sorted(found) == sorted(CPIC_1_54_FUNCTION_CHANGES)


def test_the_listed_deletions_are_what_the_change_log_says(kb):
    release = _release_alleles()
    changelog = read_release("cpic_data_changelog.tsv")
    found = []
    for path in _gene_files():
        table = json.loads(path.read_text())
        if not any(g == table["gene"] for g, _ in release):
            continue
        for allele in table["haplotypes"]:
            if (table["gene"], allele) not in release:
                found.append((table["gene"], allele))
                assert any(r["Subject"] == table["gene"] and allele in r["Note of Change"] for r in changelog), allele
    assert sorted(found) == sorted(CPIC_1_54_DELETED)
    for gene, allele in CPIC_1_54_DELETED:
        assert allele not in kb.genes[gene].alleles
        assert any(n.startswith(f"{allele} left the table") for n in kb.genes[gene].notes)


def test_gene_tables_encode_the_release_functions(kb):
    for gene, allele, _old, new in CPIC_1_54_FUNCTION_CHANGES:
        assert kb.genes[gene].alleles[allele].function == new


def test_activity_values_match_the_release(kb):
    release = _release_alleles()
    for gene in ("CYP2D6", "CYP2C9", "DPYD"):
        for allele, definition in kb.genes[gene].alleles.items():
            row = release.get((gene, allele))
            if row and row["activity_value"]:
                assert definition.activity == row["activity_value"], (gene, allele)


@pytest.mark.parametrize("path", _gene_files(), ids=lambda p: p.stem)
def test_every_cpic_diplotype_row(kb, path):
    source = json.loads(path.read_text())
    gene = source["gene"]
    interpreter = kb.interpreters[gene]
    changed = {a: new for g, a, _old, new in CPIC_1_54_FUNCTION_CHANGES if g == gene}
    deleted = {a for g, a in CPIC_1_54_DELETED if g == gene}
    defined = {p: v[0] for p, v in result_definitions(gene).items()} if gene in DEFINED_BY_RESULT_TEXTS else {}
    old_function = dict(source["haplotypes"])
    for named in source.get("namedAlleles") or []:
        old_function[named["name"]] = named["functionValue"]
    # CPIC's own function-pair rule, read from its 2024 table
    pair_rule: dict[tuple, str] = {}
    for row in source["diplotypes"]:
        alleles = [a for a, n in row["diplotypekey"].items() for _ in range(n)]
        pair_rule[tuple(sorted(old_function[a] for a in alleles))] = row.get("phenotype") or row["generesult"]

    agree, deliberate = 0, Counter()
    for row in source["diplotypes"]:
        alleles = [a for a, n in row["diplotypekey"].items() for _ in range(n)]
        result = interpreter.from_diplotype(row["diplotype"])
        expected_phenotype = row.get("phenotype") or row["generesult"]
        if any((gene, a) in CPIC_1_54_RENAMED for a in alleles):
            renamed = [CPIC_1_54_RENAMED.get((gene, a), a) for a in alleles]
            assert result.lookup == interpreter.from_diplotype("/".join(renamed)).lookup, row["diplotype"]
            deliberate[gene] += 1
            continue
        if any(a in deleted for a in alleles):
            assert result.phenotype == "Indeterminate" and "table" in result.reason, row["diplotype"]
            deliberate[gene] += 1
            continue
        if not any(a in changed for a in alleles):
            assert result.phenotype == expected_phenotype, row["diplotype"]
            assert result.lookup[gene] == row["lookupkey"], row["diplotype"]
            if interpreter.kind == "activity-score":
                assert result.activity_score == row["activityScore"], row["diplotype"]
            agree += 1
            continue
        new_pair = tuple(sorted(changed.get(a, old_function[a]) for a in alleles))
        expected_now = pair_rule.get(new_pair) or defined.get(new_pair, "Indeterminate")
        assert result.phenotype == expected_now, (row["diplotype"], new_pair)
        if result.phenotype != expected_phenotype:
            deliberate[gene] += 1
    total = len(source["diplotypes"])
    print(f"{gene}: {agree}/{total} rows agree with the 2024 table; {deliberate[gene]} differ because CPIC 1.54 "
          f"changed or deleted an allele")
    assert agree + sum(1 for row in source["diplotypes"]
                       if any(a in changed or a in deleted for a, n in row["diplotypekey"].items())) == total
