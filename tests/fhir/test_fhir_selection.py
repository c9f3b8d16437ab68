"""Which results count: status, newest per gene (and per HLA allele), conflicts. Fixtures
tests/fixtures/fhir/built/cyp2c19-history-bundle.json and conflicting-bundle.json are built from the
IG STU3 Pgx-geno-1001 and TxImp01 shapes (see tests/fixtures/fhir/README.md)."""
from __future__ import annotations

from datetime import datetime

from fhir_fixtures import load

from cds.facts import GenomicResult
from cds.fhir import read_genomic_results, select_current


def ids(results):
    return [r.source_id for r in results]


def test_outdated_entered_in_error_and_preliminary_results_do_not_count():
    current = select_current(read_genomic_results(load("built/cyp2c19-history-bundle.json")).results)
    assert ids(current.by_gene["CYP2C19"]) == ["Observation/cyp2c19-2019", "Observation/cyp2c19-2019-tximp"]
    assert [r.diplotype or r.phenotype for r in current.by_gene["CYP2C19"]] == ["*2/*2", "Poor Metabolizer"]
    assert current.conflicts == {}
    assert current.ignored == [
        "Observation/cyp2c19-2021-eie (CYP2C19): status entered-in-error does not count",
        "Observation/cyp2c19-2022-prelim (CYP2C19): status preliminary does not count",
        "Observation/cyp2c19-2015 (CYP2C19): superseded by Observation/cyp2c19-2019 (2019-04-01)",
    ]


def test_preliminary_counts_when_configured():
    results = read_genomic_results(load("built/cyp2c19-history-bundle.json")).results
    current = select_current(results, allowed_statuses=("final", "amended", "corrected", "preliminary"))
    assert ids(current.by_gene["CYP2C19"]) == ["Observation/cyp2c19-2022-prelim"]
    assert sum("superseded by Observation/cyp2c19-2022-prelim" in i for i in current.ignored) == 3


def test_conflicting_current_results():
    current = select_current(read_genomic_results(load("built/conflicting-bundle.json")).results)
    # two labs, same day, *1/*1 against *2/*2: no usable CYP2C19 result
    assert current.conflicts["CYP2C19"] == ["Observation/lab-a-cyp2c19", "Observation/lab-b-cyp2c19"]
    assert "CYP2C19" not in current.by_gene
    # CYP2C9: one genotype, but two implications that disagree (Normal vs Intermediate)
    assert current.conflicts["CYP2C9"] == ["Observation/lab-a-cyp2c9-tximp", "Observation/lab-b-cyp2c9-tximp"]
    # CYP2D6 "*1/*41" and "*41/*1" agree once allele order is set aside, and so do their phenotypes
    assert ids(current.by_gene["CYP2D6"]) == ["Observation/lab-a-cyp2d6", "Observation/lab-b-cyp2d6",
                                              "Observation/lab-a-cyp2d6-tximp", "Observation/lab-b-cyp2d6-tximp"]
    assert set(current.conflicts) == {"CYP2C19", "CYP2C9"}


def r(source, date=None, status="final", gene="CYP2C19", **value) -> GenomicResult:
    return GenomicResult(gene=gene, source_id=source, status=status,
                         effective=datetime.fromisoformat(date) if date else None, **value)


def test_a_report_dated_with_and_without_time_stays_together():
    """The genotype says "2020-01-01", its implication's report "2020-01-01T00:00:00-05:00"."""
    geno = r("Observation/g", diplotype="*2/*2", date="2020-01-01T00:00:00+00:00")
    pheno = r("Observation/t", phenotype="Poor Metabolizer", date="2020-01-01T00:00:00-05:00")
    current = select_current([geno, pheno])
    assert ids(current.by_gene["CYP2C19"]) == ["Observation/t", "Observation/g"]
    assert current.ignored == []


def test_a_newer_phenotype_only_result_supersedes_an_older_genotype():
    old = r("Observation/old", diplotype="*1/*2", date="2015-01-01T00:00:00+00:00")
    new = r("Observation/new", phenotype="Poor Metabolizer", date="2021-06-01T00:00:00+00:00")
    current = select_current([old, new])
    assert ids(current.by_gene["CYP2C19"]) == ["Observation/new"]
    assert current.ignored == ["Observation/old (CYP2C19): superseded by Observation/new (2021-06-01)"]


def test_undated_results_are_compared_not_superseded():
    dated = r("Observation/dated", diplotype="*2/*2", date="2021-06-01T00:00:00+00:00")
    undated = r("Observation/undated", diplotype="*1/*1")
    assert select_current([dated, undated]).conflicts == {"CYP2C19": ["Observation/dated", "Observation/undated"]}
    agreeing = r("Observation/undated", diplotype="*2/*2")
    assert ids(select_current([dated, agreeing]).by_gene["CYP2C19"]) == ["Observation/dated", "Observation/undated"]


def test_hla_alleles_are_selected_one_by_one():
    b5701 = r("Observation/b5701", gene="HLA-B", allele="*57:01", allele_present=False, date="2018-03-01T00:00:00+00:00")
    b1502 = r("Observation/b1502", gene="HLA-B", allele="*15:02", allele_present=True, date="2023-03-01T00:00:00+00:00")
    current = select_current([b5701, b1502])
    assert ids(current.by_gene["HLA-B"]) == ["Observation/b1502", "Observation/b5701"]
    assert current.ignored == []


def test_hla_allele_positive_and_negative_on_one_day_conflict():
    pos = r("Observation/pos", gene="HLA-B", allele="*57:01", allele_present=True, date="2023-03-01T00:00:00+00:00")
    neg = r("Observation/neg", gene="HLA-B", allele="*57:01", allele_present=False, date="2023-03-01T09:00:00+00:00")
    current = select_current([pos, neg])
    assert current.conflicts == {"HLA-B": ["Observation/neg", "Observation/pos"]} and current.by_gene == {}


def test_activity_scores_compare_as_numbers():
    a = r("Observation/a", gene="DPYD", activity_score="1", date="2023-03-01T00:00:00+00:00")
    b = r("Observation/b", gene="DPYD", activity_score="1.0", date="2023-03-01T00:00:00+00:00")
    assert select_current([a, b]).conflicts == {}
    c = r("Observation/c", gene="CYP2D6", activity_score="≥3.0", date="2023-03-01T00:00:00+00:00")
    d = r("Observation/d", gene="CYP2D6", activity_score="3.0", date="2023-03-01T00:00:00+00:00")
    assert select_current([c, d]).conflicts == {"CYP2D6": ["Observation/c", "Observation/d"]}


def test_the_same_result_read_twice_counts_once():
    results = read_genomic_results([load("built/cyp2c19-history-bundle.json"),
                                    load("built/cyp2c19-history-bundle.json")]).results
    assert len(results) == 10
    current = select_current(results)
    assert ids(current.by_gene["CYP2C19"]) == ["Observation/cyp2c19-2019", "Observation/cyp2c19-2019-tximp"]


def test_a_result_without_status_does_not_count():
    current = select_current([r("Observation/x", status=None, diplotype="*1/*1")])
    assert current.by_gene == {} and current.ignored == ["Observation/x (CYP2C19): status (none) does not count"]


# --- rule 5: a newer result that could not be read ---------------------------------------------------

def unreadable(source, date=None, status="final", gene="CYP2C19", allele=None):
    from cds.fhir.genomics import Unreadable

    return Unreadable(gene, source, f"{source}: could not be read", status,
                      datetime.fromisoformat(date) if date else None, allele)


def test_a_newer_unreadable_result_supersedes_older_readable_ones():
    old = r("Observation/old", diplotype="*1/*1", date="2019-04-01T00:00:00+00:00")
    current = select_current([old], unreadable=[unreadable("Observation/new", "2024-03-01T00:00:00+00:00")])
    assert "CYP2C19" not in current.by_gene and current.conflicts == {}
    assert current.ignored == ["Observation/old (CYP2C19): superseded by Observation/new (2024-03-01), a newer "
                               "result that could not be read"]
    assert current.superseded_by_unreadable == {"CYP2C19": ["Observation/old (2019-04-01): older, not used in its place"]}


def test_an_unreadable_result_of_the_same_day_undated_older_or_not_counting_supersedes_nothing():
    """Rule 3's day precision and undated results apply; only a counting status supersedes (rule 1)."""
    old = r("Observation/old", diplotype="*2/*2", date="2019-04-01T00:00:00+00:00")
    for u in (unreadable("Observation/same-day", "2019-04-01T12:00:00+00:00"), unreadable("Observation/undated"),
              unreadable("Observation/older", "2010-01-01T00:00:00+00:00"),
              unreadable("Observation/prelim", "2024-03-01T00:00:00+00:00", status="preliminary"),
              unreadable("Observation/other-gene", "2024-03-01T00:00:00+00:00", gene="CYP2D6")):
        current = select_current([old], unreadable=[u])
        assert ids(current.by_gene["CYP2C19"]) == ["Observation/old"], u
        assert current.ignored == [] and current.superseded_by_unreadable == {}, u


def test_an_unreadable_hla_result_supersedes_its_allele_or_with_no_allele_the_whole_gene():
    b5701 = r("Observation/b5701", gene="HLA-B", allele="*57:01", allele_present=False, date="2019-01-01T00:00:00+00:00")
    b1502 = r("Observation/b1502", gene="HLA-B", allele="*15:02", allele_present=False, date="2019-01-01T00:00:00+00:00")
    one = select_current([b5701, b1502], unreadable=[
        unreadable("Observation/new-1502", "2024-01-01T00:00:00+00:00", gene="HLA-B", allele="*15:02")])
    assert ids(one.by_gene["HLA-B"]) == ["Observation/b5701"]
    typing = select_current([b5701, b1502], unreadable=[
        unreadable("Observation/gl", "2024-01-01T00:00:00+00:00", gene="HLA-B")])
    assert "HLA-B" not in typing.by_gene
    assert sorted(typing.superseded_by_unreadable["HLA-B"]) == [
        "Observation/b1502 (2019-01-01): older, not used in its place",
        "Observation/b5701 (2019-01-01): older, not used in its place"]
