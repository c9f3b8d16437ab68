"""actionable.csv's `classification` gives the grade of every recommendation a row rests on, named by
its source and in the order of `recommendation_id`, for a site whose policy puts DPWG beside CPIC
(config/policy-examples/dpwg-beside-cpic.yaml): "CPIC: Strong + DPWG: not graded".

The expected grades come from the source tables (CPIC's release table ../shared/cpic/v1.54 and
PharmGKB's DPWG export ../shared/cpic/dpwg), not from our YAML or our output."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from pgx_paths import CPIC, REPO


def _cpic_rows() -> dict[str, dict]:
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        return {f"cpic-{row['id']}": row for row in csv.DictReader(f, delimiter="\t")}


def _dpwg_recommendations() -> dict[str, dict]:
    found = {}
    for path in sorted((CPIC / "dpwg").glob("DPWG_*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8"))["recommendations"]:
            found[f"dpwg-{rec['id']}"] = rec
    return found


def expected_part(rid: str, cpic: dict[str, dict], dpwg: dict[str, dict]) -> str:
    """What the sources say of one recommendation's grade."""
    if rid.startswith("dpwg-"):
        term = (dpwg[rid].get("classification") or {}).get("term")
        # DPWG's "No recommendation" sits on a card for completeness beside CPIC's advice (metoprolol
        # CYP2D6 2.5); it is spelt as CPIC spells it. "N/A" (or no term): DPWG grades nothing.
        if term and term.lower() == "no recommendation":
            return "DPWG: No Recommendation"
        assert term in ("N/A", None), (rid, term)
        return "DPWG: not graded"
    row = cpic[rid]
    population = row["population"].strip()
    return f"CPIC{'' if population == 'general' else f' ({population})'}: {row['classification']}"


def _screen(cohort, out, knowledge_dir=None) -> list[dict]:
    from cds.screen.run import ScreenOptions, screen

    screen(ScreenOptions(input_dir=cohort, out=out, workers=1, knowledge_dir=knowledge_dir, audit_key=b"c" * 40,
                         progress=False))
    with open(out / "actionable.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def beside(cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpwg-site")
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, root / part)
    shutil.copy(REPO / "config" / "policy-examples" / "dpwg-beside-cpic.yaml", root / "rules" / "default.yaml")
    return _screen(cohort, tmp_path_factory.mktemp("screened-both"), root)


def _kinds_checked(rows: list[dict]) -> set[tuple[str, ...]]:
    cpic, dpwg = _cpic_rows(), _dpwg_recommendations()
    kinds = set()
    for row in rows:
        ids = row["recommendation_id"].split(" + ")
        kinds.add(tuple(sorted({rid.split("-")[0] for rid in ids})))
        assert row["classification"] == " + ".join(expected_part(rid, cpic, dpwg) for rid in ids), row
    return kinds


def test_every_row_names_each_sources_grade_as_the_sources_give_it(beside):
    # the cohort exercises cards resting on both sources and on DPWG alone
    assert {("cpic", "dpwg"), ("dpwg",)} <= _kinds_checked(beside)


def test_a_cpic_only_site_names_cpics_grade(cohort, tmp_path):
    assert _kinds_checked(_screen(cohort, tmp_path)) == {("cpic",)}


def test_a_card_on_both_sources_lists_cpic_first_as_its_ids_do(beside):
    both = [r for r in beside if " + " in r["recommendation_id"]]
    assert both
    for row in both:
        parts = row["classification"].split(" + ")
        assert len(parts) == len(row["recommendation_id"].split(" + "))
        assert parts[0].startswith("CPIC") and parts[-1].startswith("DPWG: "), row
