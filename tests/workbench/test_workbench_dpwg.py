"""DPWG in the workbench: the matrix names each guideline's source and toggles CPIC / DPWG / both; a DPWG
guideline page lists the recommendations our gene tables cannot reach, with the reason."""
from __future__ import annotations


def _row(page: str, drug: str) -> str:
    row = page[page.index(f'data-drug="{drug}"'):]
    return row[:row.index("</tr>")]


def test_matrix_shows_both_sources_and_toggles(client):
    page = client.get("/workbench/").get_data(as_text=True)
    clopidogrel = _row(page, "clopidogrel")
    assert 'href="/workbench/guidelines/cpic-clopidogrel-cyp2c19"' in clopidogrel
    assert 'href="/workbench/guidelines/dpwg-clopidogrel-cyp2c19"' in clopidogrel
    assert "sources: CPIC" in clopidogrel                    # the shipped policy shows CPIC's advice only
    assert 'href="/workbench/guidelines/dpwg-flecainide-cyp2d6"' in _row(page, "flecainide")
    dpwg_only = client.get("/workbench/?source=DPWG").get_data(as_text=True)
    row = _row(dpwg_only, "clopidogrel")
    assert "dpwg-clopidogrel-cyp2c19" in row and "cpic-clopidogrel-cyp2c19" not in row
    assert "<strong>DPWG only</strong>" in dpwg_only
    cpic_only = client.get("/workbench/?source=cpic").get_data(as_text=True)
    assert "dpwg-clopidogrel-cyp2c19" not in _row(cpic_only, "clopidogrel")


def test_dpwg_guideline_page_lists_unreachable_recommendations(client):
    response = client.get("/workbench/guidelines/dpwg-quetiapine-cyp3a4")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Recommendations our gene tables cannot reach (3)" in page
    assert "no CYP3A4 gene table in guidelines/genes" in page and "Poor Metabolizer" in page
    flucloxacillin = client.get("/workbench/guidelines/dpwg-flucloxacillin-hla-b").get_data(as_text=True)
    assert "no RxNorm ingredient code in the sources" in flucloxacillin and "matched by the ingredient" in flucloxacillin
