"""The DPWG guidelines: every recommendation of the export (../shared/cpic/dpwg, 529) is either reached
exactly and alone through our gene tables, or listed with its reason in tests/fixtures/dpwg-unreachable.tsv;
the import regenerates guidelines/dpwg byte for byte; unreachable keys are reported with file and line.

The expectations come from the source JSON, not from our YAML: the test reads each recommendation's
lookup key, states it to the gene table as a result (phenotype, activity score, allele status), and
compares what the engine returns with the JSON's id and text.
"""
from __future__ import annotations

import csv
import itertools
import html
import json
import re
import shutil

import pytest

from dpwg_text import source_words, words
from pgx_paths import CPIC, REPO
from cds.explain import parse_genotype_args

DPWG = CPIC / "dpwg"
FIXTURE = REPO / "tests" / "fixtures" / "dpwg-unreachable.tsv"


def _source_recommendations():
    for path in sorted(DPWG.glob("DPWG_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for rec in data["recommendations"]:
            yield path, rec


def _unreachable() -> dict[str, dict[str, str]]:
    lines = [line for line in FIXTURE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return {row["id"]: row for row in csv.DictReader(lines, delimiter="\t")}


def _stated(value) -> str:
    """A DPWG lookup value as a result statement (`cds explain --genotype` syntax)."""
    if isinstance(value, dict):
        return "/".join(name for name, n in value.items() for _ in range(int(n)))
    m = re.match(r"^(\d+(?:\.\d+)?) \((.+)\)$", value)  # DPYD: "1.0 (Intermediate Metabolizer)"
    if m:
        return f"score:{m.group(1)}"
    if re.match(r"^≥?\d+(\.\d+)?$", value):
        return f"score:{value}"
    return value


def test_the_export_has_529_recommendations_for_53_drugs():
    recs = list(_source_recommendations())
    assert len(recs) == 529
    assert len({c["name"] for _, r in recs for c in r["relatedChemicals"]}) == 53


def test_every_dpwg_recommendation_is_reached_alone_or_listed_with_its_reason(kb, engine):
    unreachable = _unreachable()
    reached = 0
    for path, rec in _source_recommendations():
        (chem,) = rec["relatedChemicals"]
        rid = f"dpwg-{rec['id']}"
        if rid in unreachable:
            row = unreachable[rid]
            assert row["drug"] == chem["name"], rid
            assert row["reason"], rid
            continue
        statements = [f"{gene}={_stated(value)}" for gene, value in rec["lookupKey"].items()]
        evaluation = engine.evaluate(parse_genotype_args(engine, statements), [chem["name"]], sources=["DPWG"])
        got = evaluation.drugs[0].matches
        assert [m.recommendation.id for m in got] == [rid], (path.name, rec["lookupKey"])
        assert got[0].guideline.source == "DPWG"
        assert words(got[0].recommendation.recommendation) == source_words(rec["text"]["html"]), rid
        term = (rec.get("classification") or {}).get("term")
        assert got[0].recommendation.classification == ("No Recommendation" if term == "No recommendation" else None), rid
        flags = got[0].recommendation.flags
        assert (flags.dosing_information, flags.alternate_drug_available, flags.other_prescribing_guidance) == \
            (rec["dosingInformation"], rec["alternateDrugAvailable"], rec["otherPrescribingGuidance"]), rid
        reached += 1
    print(f"DPWG recommendations reached exactly and alone: {reached}; unreachable (fixture): {len(unreachable)}")
    assert reached + len(unreachable) == 529
    encoded = {r.id for g in kb.guidelines.values() if g.source == "DPWG" for r in g.unreachable}
    assert encoded == set(unreachable)


def test_unreachable_ones_say_why_and_are_reached_by_nothing(kb, engine):
    rows = _unreachable()
    reasons = {row["reason"] for row in rows.values()}
    assert any("no CYP3A4 gene table" in r for r in reasons)
    assert any("phenotyping" in r for r in reasons)
    # only what no table of ours can produce is left: no gene table, enzyme phenotyping, an allele the HLA-B
    # table does not type, a drug without an RxNorm code; never a genotype of two alleles our tables name
    assert not any("keyed by the" in r and "genotype" in r for r in reasons)
    assert all(re.search(r"no \S+ gene table|phenotyping|HLA-B|no RxNorm", r) for r in reasons), reasons


@pytest.mark.parametrize("drug,diplotype,expected", [
    # DPWG keys these by genotype (allele counts, ../shared/cpic/dpwg/DPWG_*_and_CYP2C9.json) and its
    # genotype wins over the phenotype the diplotype implies (*2/*2: activity score 1.0, an Intermediate
    # Metabolizer by CPIC's ranges, for which DPWG's siponimod advice differs)
    ("siponimod", "*3/*3", "PA166299159"), ("siponimod", "*2/*2", "PA166299157"), ("siponimod", "*3/*1", "PA166299156"),
    ("warfarin", "*1/*3", "PA166299070"), ("phenytoin", "*2/*3", "PA166299255"),
    ("irinotecan", "*28/*28", "PA166303201"), ("irinotecan", "*80+*28/*1", "PA166313042"),
    # a genotype DPWG does not name gets the advice for the phenotype it implies (CYP2C9 *1/*8: score 1.5,
    # Intermediate Metabolizer; UGT1A1 *6/*6: Poor Metabolizer), as DPWG's phenotype keys say
    ("siponimod", "*1/*8", "PA166299153"), ("warfarin", "*1/*1", "PA166299075"), ("irinotecan", "*6/*6", "PA166299191"),
])
def test_a_diplotype_reaches_dpwgs_genotype_key_else_the_phenotype_it_implies(engine, drug, diplotype, expected):
    gene = "UGT1A1" if drug == "irinotecan" else "CYP2C9"
    evaluation = engine.evaluate(parse_genotype_args(engine, [f"{gene}={diplotype}"]), [drug], sources=["DPWG"])
    assert [m.recommendation.id for m in evaluation.drugs[0].matches] == [f"dpwg-{expected}"]


def test_validate_lists_unreachable_keys_with_file_and_line(kb):
    from cds.knowledge.reachability import unreachable_notes

    notes = unreachable_notes(kb)
    assert len(notes) == len(_unreachable())
    cyp3a4 = [n for n in notes if "quetiapine" in n.message and "Poor Metabolizer" in n.message][0]
    assert cyp3a4.file == "guidelines/dpwg/dpwg-quetiapine-cyp3a4.yaml"
    lines = (REPO / cyp3a4.file).read_text(encoding="utf-8").splitlines()
    assert lines[cyp3a4.line - 1].strip() == f"- id: {cyp3a4.message.split()[2]}"


def test_import_regenerates_the_dpwg_yaml_byte_for_byte(tmp_path):
    from cds.knowledge.dpwg_importer import import_dpwg

    shutil.copytree(REPO / "guidelines" / "genes", tmp_path / "genes")
    report = import_dpwg(CPIC, tmp_path)
    assert report.recommendations == 529
    shipped = sorted((REPO / "guidelines" / "dpwg").glob("*.yaml"))
    produced = sorted((tmp_path / "dpwg").glob("*.yaml"))
    assert [p.name for p in produced] == [p.name for p in shipped]
    assert len(shipped) == 62
    for ours, theirs in zip(shipped, produced):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name


def test_a_new_gene_table_makes_an_unreachable_entry_an_error(tmp_path):
    """Listing something as unreachable must stay true: a table that now reaches it is a validation error.
    (The file as it was before HLA-B*15:11 became an allele of interest, against today's table.)"""
    import yaml

    from cds.errors import KnowledgeError
    from cds.knowledge.loader import load_knowledge

    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, tmp_path / part)
    path = tmp_path / "guidelines" / "dpwg" / "dpwg-carbamazepine-hla-b.yaml"
    guideline = yaml.safe_load(path.read_text(encoding="utf-8"))
    (rec,) = [r for r in guideline["recommendations"] if r["id"] == "dpwg-PA166299113"]
    guideline["recommendations"].remove(rec)
    guideline["unreachable"].insert(0, {"id": rec["id"], "drug": rec["drug"], "source_key": rec["lookup"],
                                        "reason": "HLA-B*15:11 is not an allele of interest of our HLA-B table",
                                        "recommendation": rec["recommendation"], "flags": rec["flags"],
                                        "source": rec["source"]})
    path.write_text(yaml.safe_dump(guideline, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(tmp_path)
    assert "dpwg-PA166299113 is listed as unreachable" in str(err.value)
    assert "guidelines/dpwg/dpwg-carbamazepine-hla-b.yaml:" in str(err.value)


def test_dpwg_drug_codes_come_from_the_sources(kb):
    with (CPIC / "v1.54" / "cpic_drugs_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        codes = {r["pharmgkbid"]: r["rxnormid"] for r in csv.DictReader(f, delimiter="\t")}
    by_name = []
    for g in kb.guidelines.values():
        if g.source != "DPWG":
            continue
        for d in g.drugs:
            if d.no_rxnorm:
                assert not codes.get(d.pharmgkb) and not d.rxnorm
                by_name.append(d.name)
            else:
                assert d.rxnorm == codes[d.pharmgkb], d.name
    assert sorted(by_name) == ["flucloxacillin", "flucytosine"]


def _cds(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "cds.cli", *args], capture_output=True, text=True, timeout=300)


def test_explain_source_option_shows_each_source_labelled():
    dpwg_json = _cds("explain", "--genotype", "CYP2C19=*2/*2", "--drug", "clopidogrel", "--source", "dpwg", "--json")
    assert dpwg_json.returncode == 0, dpwg_json.stderr
    recs = json.loads(dpwg_json.stdout)["recommendations"]
    source = next(r for p, r in _source_recommendations() if p.name == "DPWG_clopidogrel_and_CYP2C19.json"
                  and r["lookupKey"] == {"CYP2C19": "Poor Metabolizer"})
    assert [(r["source"], r["id"]) for r in recs] == [("DPWG", f"dpwg-{source['id']}")]
    assert words(recs[0]["recommendation"]) == source_words(source["text"]["html"])
    default = json.loads(_cds("explain", "--genotype", "CYP2C19=*2/*2", "--drug", "clopidogrel", "--json").stdout)
    assert {r["source"] for r in default["recommendations"]} == {"CPIC"}   # the shipped policy: CPIC only
    both = _cds("explain", "--genotype", "CYP2C19=*2/*2", "--drug", "clopidogrel", "--source", "all")
    assert "  CPIC [CVI ACS PCI] Strong:" in both.stdout and "  DPWG [general] not graded:" in both.stdout
    bad = _cds("explain", "--genotype", "CYP2C19=*2/*2", "--drug", "clopidogrel", "--source", "nice")
    assert bad.returncode == 1 and "expected cpic, dpwg or all" in bad.stderr


def test_version_lists_dpwg_versions_and_validate_lists_unreachable_keys():
    version = _cds("version")
    assert version.returncode == 0, version.stderr
    assert "guideline sources the policy selects by default: CPIC" in version.stdout
    assert "DPWG guidelines (62):" in version.stdout
    assert "  dpwg-codeine-cyp2d6: PharmGKB export of the DPWG guidelines 2024-03-25-16-13, annotation version 37" in version.stdout
    validate = _cds("validate")
    assert validate.returncode == 0, validate.stderr
    assert f"{len(_unreachable())} source recommendation(s) our gene tables cannot reach" in validate.stdout
    assert re.search(r"guidelines/dpwg/dpwg-quetiapine-cyp3a4\.yaml:\d+: DPWG recommendation dpwg-\S+ \(quetiapine; "
                     r"CYP3A4 Poor Metabolizer\) cannot be reached: no CYP3A4 gene table", validate.stdout)


def test_the_example_policy_selecting_both_sources_passes_cds_test(tmp_path):
    """config/policy-examples/dpwg-beside-cpic.yaml as a site's rules/default.yaml: its cases (combined cards,
    DPWG-only drugs, a key the engine cannot match said in a card) pass, and the knowledge validates."""
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copy(REPO / "config" / "policy-examples" / "dpwg-beside-cpic.yaml", tmp_path / "rules" / "default.yaml")
    assert _cds("validate", str(tmp_path)).returncode == 0
    result = _cds("test", str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert "PASS  default: siponimod, CYP2C9 *1/*3" in result.stdout
    assert "PASS  default: clopidogrel, CYP2C19 poor metabolizer — one card with both sources' advice" in result.stdout


@pytest.mark.parametrize("gene", ["HLA-A", "HLA-B"])
def test_hla_alleles_of_interest_are_those_cpic_or_dpwg_key_by(kb, gene):
    """An allele DPWG keys a recommendation by (HLA-B*15:11, carbamazepine) is read like CPIC's own:
    otherwise its carrier reads as negative for it and DPWG's advice never reaches the card."""
    from hla_sources import cpic_hla_alleles, dpwg_hla_alleles

    table = kb.genes[gene]
    assert set(table.alleles_of_interest) == cpic_hla_alleles(gene) | dpwg_hla_alleles(gene)
    dpwg_only = dpwg_hla_alleles(gene) - cpic_hla_alleles(gene)
    assert bool(dpwg_only) == any("DPWG" in s.name for s in table.sources)
    for allele in dpwg_only:
        assert any(note.startswith(f"{allele} is an allele of interest because DPWG") for note in table.notes)


def test_list_items_stay_apart_on_the_card(kb):
    """Items of one list in the export read as parts of one sentence ('; '), not run together: "against the
    benefits If an alternative…" was what a clinician read before."""
    def spaced(text: str) -> str:
        return re.sub(r"\s+(?=[.,;:])", "", " ".join(text.split()))

    ours = {r.id: r.recommendation for g in kb.guidelines.values() if g.source == "DPWG"
            for r in [*g.recommendations, *g.unreachable]}
    joined = 0
    for _, rec in _source_recommendations():
        for listing in re.findall(r"<ul>(.*?)</ul>", rec["text"]["html"], re.S):
            raw = re.findall(r"<li>(.*?)</li>", listing, re.S)
            if any("<ul>" in item for item in raw):
                continue        # a nested list: this naive reading cannot pair its items
            items = [spaced(html.unescape(re.sub(r"<[^>]+>", " ", item))) for item in raw]
            for first, second in itertools.pairwise(items):
                if first and not first.endswith((".", ":", ";", ",", "!", "?")):
                    assert f"{first}; {second}" in ours[f"dpwg-{rec['id']}"], rec["id"]
                    joined += 1
    assert joined == 10     # item pairs without punctuation in flat lists of the 2024-03-25 export
