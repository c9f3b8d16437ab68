"""PharmCAT's outputs read as PharmCAT called each gene (its own example files, ../shared/pharmcat).

The expected values are read from PharmCAT's JSON here, independently of cds.pharmcat: every gene
report of both files (`geneReports` of the phenotyper, `genes` of the reporter) must come back with
PharmCAT's call source, diplotype, phenotypes, activity score and lookup key; `cds explain --pharmcat`
must give the recommendations that the same calls typed as `--genotype` give; and for every drug whose
CPIC advice PharmCAT's own report gives, the recommendations we find are looked up with PharmCAT's key.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cds.explain import drugs_with_advice, explain, to_json
from cds.pharmcat.interpret import interpret_calls
from cds.pharmcat.model import CALLED, INDETERMINATE, NO_RESULT, OUTSIDE_CALL_TSV, REPORT_JSON
from cds.pharmcat.read import read_pharmcat
from hla_sources import dpwg_only_hla_alleles
from pgx_paths import REPO, SHARED

PHARMCAT = SHARED / "pharmcat"
EXAMPLES = ["pharmcat.example.phenotype.json", "pharmcat.example.report.json"]


def gene_reports(name: str) -> dict[str, dict]:
    doc = json.loads((PHARMCAT / name).read_text(encoding="utf-8"))
    return doc["geneReports"] if "geneReports" in doc else doc["genes"]


def allele_names(rec: dict) -> str:
    return "/".join(rec[k]["name"] for k in ("allele1", "allele2") if rec.get(k))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_gene_call_equals_pharmcats_own(name):
    results = read_pharmcat(PHARMCAT / name)
    reports = gene_reports(name)
    assert [c.gene for c in results.calls] == list(reports)                 # every gene, none added
    for call in results.calls:
        report = reports[call.gene]
        recs = report["recommendationDiplotypes"]
        assert call.call_source == report["callSource"], call.gene
        assert [d.text for d in call.diplotypes] == [allele_names(r) for r in recs], call.gene
        assert [list(d.phenotypes) for d in call.diplotypes] == [r["phenotypes"] for r in recs], call.gene
        assert [d.activity_score for d in call.diplotypes] == [r["activityScore"] for r in recs], call.gene
        assert [list(d.lookup_keys) for d in call.diplotypes] == [r["lookupKey"] for r in recs], call.gene
        no_result = all(r["lookupKey"] == ["No Result"] for r in recs)
        assert (call.status == NO_RESULT) == no_result, call.gene
        if len(recs) == 1 and not no_result:
            assert call.status == CALLED, call.gene
        assert call.phenotype_version == report["phenotypeVersion"]
    # what the example holds, so the walk above is known to cover each kind of call
    assert {c.call_source for c in results.calls} == {"MATCHER", "OUTSIDE", "NONE"}
    assert results.call("HLA-A").status == NO_RESULT
    assert results.data_version == "2025-11-05-00-25"
    if results.kind == REPORT_JSON:
        assert results.method == "PharmCAT v3.1.0-2-g0b250f81, data version 2025-11-05-00-25"


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_call_gets_pharmcats_lookup_key_in_our_tables(name, kb):
    """The statement the engine reads for each gene is PharmCAT's own lookup key, or Indeterminate where
    PharmCAT assigns none ("n/a"); genes we have no table for, or no call, are said in a note."""
    reading = interpret_calls(kb.interpreters, read_pharmcat(PHARMCAT / name))
    reports = gene_reports(name)
    checked = 0
    for gene, report in reports.items():
        keys = report["recommendationDiplotypes"][0]["lookupKey"]
        if gene not in kb.interpreters or keys == ["No Result"]:
            assert gene not in reading.interpretations
            assert any(n.startswith(f"{gene}: ") for n in reading.notes), gene
            continue
        values = {v for i in reading.interpretations[gene] for v in i.lookup.values()}
        # PharmCAT keys by CPIC's alleles; an allele only DPWG keys by (HLA-B*15:11) is ours beside them
        values -= {v for v in values if v.split()[0] in dpwg_only_hla_alleles(gene)}
        if not keys:          # PharmCAT gives the gene no phenotype (CYP4F2): its diplotype, read by our table
            assert [i.stated_as for i in reading.interpretations[gene]] == ["diplotype"], gene
        elif keys == ["n/a"]:
            assert [i.phenotype for i in reading.interpretations[gene]] == ["Indeterminate"]
            assert "no phenotype (n/a)" in reading.interpretations[gene][0].reason
        else:
            assert set(keys) == values, gene
        checked += 1
    assert checked == len([g for g, r in reports.items() if g in kb.interpreters
                           and r["recommendationDiplotypes"][0]["lookupKey"] != ["No Result"]]) >= 19


@pytest.mark.parametrize("name", EXAMPLES)
def test_explain_pharmcat_gives_what_the_same_calls_typed_give(name, engine):
    reading = interpret_calls(engine.kb.interpreters, read_pharmcat(PHARMCAT / name))
    typed = []
    for gene, report in gene_reports(name).items():
        rec = report["recommendationDiplotypes"][0]
        if gene not in engine.kb.interpreters or rec["lookupKey"] == ["No Result"]:
            continue
        # PharmCAT assigns no phenotype ("n/a"): that call typed is "Indeterminate"
        typed.append(f"{gene}={'Indeterminate' if rec['lookupKey'] == ['n/a'] else allele_names(rec)}")
    drugs = drugs_with_advice(engine, reading.interpretations)
    assert len(drugs) > 100
    from_file = to_json(explain(engine, [], drugs, sources=["CPIC", "DPWG"], statements=reading.interpretations))
    from_typed = to_json(explain(engine, typed, drugs, sources=["CPIC", "DPWG"]))
    assert from_file["recommendations"] == from_typed["recommendations"]
    assert from_file["conflicts"] == from_typed["conflicts"]
    assert len(from_file["recommendations"]) > 150


def test_cpic_advice_is_looked_up_with_pharmcats_key_for_every_drug_pharmcats_report_gives(engine):
    """PharmCAT's report lists, per drug, the CPIC annotation and the lookup key it matched; ours must be
    the same key. (CPIC 1.54's release-only drugs — 25 G6PD drugs here — are not in PharmCAT's report.)"""
    report = json.loads((PHARMCAT / "pharmcat.example.report.json").read_text(encoding="utf-8"))
    theirs: dict[str, set[str]] = {}
    for drug, entry in report["drugs"]["CPIC Guideline Annotation"].items():
        for guideline in entry["guidelines"]:
            for annotation in guideline["annotations"]:
                for key in annotation.get("lookupKey") or []:
                    theirs.setdefault(drug, set()).add(json.dumps(key, sort_keys=True))
    reading = interpret_calls(engine.kb.interpreters, read_pharmcat(PHARMCAT / "pharmcat.example.report.json"))
    found = to_json(explain(engine, [], sorted(theirs), sources=["CPIC"], statements=reading.interpretations))
    ours: dict[str, set[str]] = {}
    for rec in found["recommendations"]:
        ours.setdefault(rec["drug"], set()).add(json.dumps(rec["lookup_key"], sort_keys=True))
    assert len(theirs) == 73
    assert ours == theirs


def test_cli_explain_pharmcat_prints_pharmcats_calls_and_the_advice():
    out = subprocess.run([sys.executable, "-m", "cds.cli", "explain", "--pharmcat",
                          str(PHARMCAT / "pharmcat.example.phenotype.json"), "--drug", "codeine", "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    body = json.loads(out.stdout)
    cyp2d6 = next(c for c in body["pharmcat"]["calls"] if c["gene"] == "CYP2D6")
    assert cyp2d6 == {"gene": "CYP2D6", "call_source": "OUTSIDE", "status": "called", "diplotype": "*1/*3",
                      "phenotypes": ["Intermediate Metabolizer"], "activity_score": "1.0", "reason": None,
                      "messages": [cyp2d6["messages"][0]]}
    assert body["phenotypes"]["CYP2D6"]["lookup_key"] == "1.0"
    assert {r["lookup_key"]["CYP2D6"] for r in body["recommendations"]} == {"1.0"}
    text = subprocess.run([sys.executable, "-m", "cds.cli", "explain", "--pharmcat",
                           str(PHARMCAT / "pharmcat.example.phenotype.json"), "--drug", "codeine"],
                          capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "HLA-A    Unknown/Unknown [NONE] no result" in text and "CYP2D6   *1/*3 [OUTSIDE] called" in text


def test_outside_call_file_read_line_by_line(kb):
    results = read_pharmcat(PHARMCAT / "outside-calls-suballeles.tsv")
    assert results.kind == OUTSIDE_CALL_TSV
    assert [(c.gene, c.diplotype, c.call_source, c.line) for c in results.calls] == [
        ("CYP2D6", "*1.001/*2.034", "OUTSIDE", 1), ("HLA-A", "A*02:02:02/*03:02:01", "OUTSIDE", 2),
        ("HLA-B", "*02:01/B*04:05", "OUTSIDE", 3)]
    reading = interpret_calls(kb.interpreters, results)
    assert set(reading.interpretations) == {"CYP2D6", "HLA-A", "HLA-B"}   # read by the one genotype parser


# --- shapes the examples do not hold, made from their own gene reports ---------------------------

def _doc_with(gene: str, change) -> str:
    doc = json.loads((PHARMCAT / "pharmcat.example.phenotype.json").read_text(encoding="utf-8"))
    change(doc["geneReports"][gene])
    return json.dumps(doc)


def test_several_recommendation_diplotypes_are_indeterminate_with_pharmcats_candidates(kb, tmp_path):
    def two_calls(report):
        other = json.loads(json.dumps(report["recommendationDiplotypes"][0]))
        other["allele2"]["name"], other["label"] = "*2", "*38/*2"
        other["phenotypes"], other["lookupKey"] = ["Intermediate Metabolizer"], ["Intermediate Metabolizer"]
        report["recommendationDiplotypes"].append(other)
    path = tmp_path / "ambiguous.phenotype.json"
    path.write_text(_doc_with("CYP2C19", two_calls), encoding="utf-8")
    call = read_pharmcat(path).call("CYP2C19")
    assert call.status == INDETERMINATE and call.diplotype == "*38/*38 or *38/*2"
    assert call.reason == ("PharmCAT could not decide between 2 CYP2C19 diplotypes (*38/*38 (Normal Metabolizer); "
                           "*38/*2 (Intermediate Metabolizer))")
    statement = interpret_calls(kb.interpreters, read_pharmcat(path)).interpretations["CYP2C19"]
    assert [(i.phenotype, i.lookup_key, i.reason) for i in statement] == [("Indeterminate", "Indeterminate", call.reason)]


def test_a_combination_call_is_indeterminate(kb, tmp_path):
    def combination(report):
        rec = report["recommendationDiplotypes"][0]
        rec["combination"], rec["label"] = True, "[*2 + *3]/*1"
    path = tmp_path / "combination.phenotype.json"
    path.write_text(_doc_with("CYP2C19", combination), encoding="utf-8")
    call = read_pharmcat(path).call("CYP2C19")
    assert call.status == INDETERMINATE and "combination of CYP2C19 alleles ([*2 + *3]/*1)" in call.reason


def test_pharmcat_2_reports_nested_by_source_are_read(tmp_path):
    doc = json.loads((PHARMCAT / "pharmcat.example.phenotype.json").read_text(encoding="utf-8"))
    doc["geneReports"] = {"DPWG": {"CYP2D6": doc["geneReports"]["TPMT"]},
                          "CPIC": {"CYP2D6": doc["geneReports"]["CYP2D6"], "TPMT": doc["geneReports"]["TPMT"]}}
    path = tmp_path / "v2.phenotype.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    results = read_pharmcat(path)
    assert {c.gene: c.diplotype for c in results.calls} == {"CYP2D6": "*1/*3", "TPMT": "*1/*1"}   # CPIC's first


@pytest.mark.parametrize("content, message", [
    ('{"genes": {}}', "not a PharmCAT phenotype.json"),
    ('{"geneReports": {"CYP2D6": {"callSource": "LAB"}}}', "callSource 'LAB' is not one of"),
    ('{"geneReports": [}', "not valid JSON: Expecting value at line 1, column 18"),
    ("CYP2D6\n", "x.tsv:1: CYP2D6 states no diplotype, phenotype or activity score"),
    ("# lab calls\nCYP2D6\t*1/*2\nCYP2D6\t*1/*4\n", "x.tsv:3: a second call for CYP2D6 (the first is on line 2)"),
    ("CYP2D6 *1/*2\n", "x.tsv:1: the first field must be the gene symbol"),
    ("# nothing\n", "x.tsv: no calls"),
])
def test_unreadable_files_are_sentences_with_file_and_line(tmp_path, content, message):
    from cds.errors import CdsError
    from cds.pharmcat.read import parse_pharmcat

    with pytest.raises(CdsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_pharmcat(content.encode(), "x.tsv")


def test_outside_call_with_several_diplotypes_is_indeterminate():
    from cds.pharmcat.read import read_outside_calls

    results = read_outside_calls("CYP2C19\t*1/*2 or *2/*17\nCYP2C9\t\t\t1.5\nHLA-B\t\t*57:01 positive\n")
    first, score, status = results.calls
    assert first.status == INDETERMINATE and first.reason == "the outside call names 2 possible CYP2C19 diplotypes (*1/*2 or *2/*17)"
    assert (score.diplotype, score.diplotypes[0].activity_score) == (None, "1.5")
    assert status.diplotypes[0].phenotypes == ("*57:01 positive",)
