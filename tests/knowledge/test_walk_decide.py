"""Every recommendation of CPIC release 1.54 and of the DPWG export, walked through the decision core
(issue 20, acceptance): one patient per lookup key, written as the FHIR results a laboratory sends, one
draft order for the drug, `cds.decision.decide` — FHIR reading, interpretation, engine, cards, notices.

Each drug gets the source's advice for its key (the release's or the export's id, and a card carrying it
wherever the policy raises one), or the fixtures say why it cannot; and no drug ever gets both advice and a
"could not be interpreted" card. Expectations come from the sources: the release table, the DPWG JSON, and
CPIC's own diplotype and allele tables to write each key as a laboratory would (a diplotype for an activity
score or a CPIC-defined Indeterminate, a phenotype term, an HLA status).

The engine is built once per source; one decide per key (about 2,700) keeps the walk to seconds.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from decimal import Decimal
from itertools import combinations_with_replacement

import pytest

from cpic_sources import release_recommendations
from pgx_paths import CPIC, REPO
from cds.decision import PatientCase, decide
from cds.engine import Engine
from cds.knowledge.loader import load_knowledge
from cds.knowledge.models import NO_RESULT
from cds.pipeline import Advisor

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NOT_INTERPRETED = "result-not-interpretable"


def _fixture_ids(name: str) -> set[str]:
    lines = [line for line in (REPO / "tests" / "fixtures" / name).read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    return {row["id"] for row in csv.DictReader(lines, delimiter="\t")}


# --- writing a lookup key as a laboratory's FHIR results, from CPIC's own tables ----------------------

def _score(text: str) -> tuple[Decimal, bool] | None:
    text = text.strip()
    at_least = text.startswith("≥")
    try:
        return Decimal(text.lstrip("≥")), at_least
    except ArithmeticError:
        return None


class LabWriter:
    """A diplotype CPIC's tables give a lookup key, for the keys a laboratory reports as a diplotype."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], str] = {}
        with (CPIC / "v1.54" / "cpic_alleles_v1.54.tsv").open(encoding="utf-8", newline="") as f:
            release = list(csv.DictReader(f, delimiter="\t"))
        functions = {(r["gene"], r["allele"]): r["clinical_functional_status"] for r in release}
        activities = {(r["gene"], r["allele"]): r["activity_value"] for r in release}
        for path in sorted((CPIC / "genes").glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            old = dict(data.get("activityValues") or {}) or dict(data["haplotypes"])
            now = activities if data.get("activityValues") else functions
            for row in data["diplotypes"]:
                alleles = [a for a, n in row["diplotypekey"].items() for _ in range(n)]
                # a row whose alleles release 1.54 gives another function (the thiopurine update) no longer
                # has the 2024 table's key
                if "/" in row["diplotype"] and all(now.get((data["gene"], a), old.get(a)) == old.get(a)
                                                   for a in alleles):
                    self.by_key.setdefault((data["gene"], row["lookupkey"]), row["diplotype"])
        values: dict[str, dict[str, tuple[Decimal, bool]]] = {}
        for row in release:
            parsed = _score(row["activity_value"]) if row["activity_value"] else None
            if parsed:
                values.setdefault(row["gene"], {})[row["allele"]] = parsed
        for gene, alleles in values.items():      # release-only keys (e.g. CYP2D6 ≥3.5): a pair that sums to it
            for a, b in combinations_with_replacement(sorted(alleles), 2):
                total, at_least = alleles[a][0] + alleles[b][0], alleles[a][1] or alleles[b][1]
                text = f"{total:.2f}".rstrip("0")
                key = ("≥" if at_least else "") + (text + "0" if text.endswith(".") else text)
                self.by_key.setdefault((gene, key), f"{a}/{b}")

    def observations(self, kb, lookup: dict[str, str]) -> list[dict] | None:
        out = []
        for n, (gene, value) in enumerate(sorted(lookup.items())):
            if value == NO_RESULT:
                continue
            kind = kb.interpreters[gene].kind
            named = {name: pair for pair, name in kb.genes[gene].genotype_names.items()} if kind == "genotype" else {}
            if kind == "allele-status":
                text, what = f"{gene}{value}", "typing"
            elif value in named:
                text, what = f"{gene} {named[value]}", "genotype"                 # VKORC1 -1639 AG: its two alleles
            elif kb.interpreters[gene].genotype_of_key(value):
                text, what = f"{gene} {value}", "genotype"                      # DPWG genotype keys
            elif (gene, value) in self.by_key and (kind == "activity-score" or value == "Indeterminate"):
                text, what = f"{gene} {self.by_key[(gene, value)]}", "genotype"   # scores, CPIC's Indeterminate
            elif value in kb.interpreters[gene].phenotypes:
                text, what = value, "predicted phenotype"
            else:
                return None
            out.append({"resourceType": "Observation", "id": f"lab-{n}", "status": "final",
                        "code": {"text": f"{gene} {what}"}, "subject": {"reference": "Patient/walk"},
                        "effectiveDateTime": "2024-03-01", "valueString": text})
        return out


def _order(plan) -> dict:
    """A draft order for the drug: by its RxNorm ingredient code, or by name where the sources give none."""
    concept: dict = {"text": plan.drug}
    if plan.rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": plan.rxnorm, "display": plan.drug}]
    return {"resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/walk"}, "medicationCodeableConcept": concept}


def walk(advisor: Advisor, writer: LabWriter, recs, explained: set[str]) -> dict[str, object]:
    """recs: (id, drug, population, lookup). Returns the counts and every failure."""
    kb = advisor.kb
    returned, carded, contradicting, failures = 0, 0, [], []
    explained_seen = 0
    for rid, drug, population, lookup in recs:
        if rid in explained:
            explained_seen += 1
            continue
        plan = advisor.engine.drug_plan(drug)
        genomics = writer.observations(kb, lookup)
        if plan is None or genomics is None:
            failures.append((rid, drug, lookup, "no plan" if plan is None else "key not writable"))
            continue
        advice = decide(advisor, PatientCase(hook="order-sign", patient_ref="Patient/walk", genomics=genomics,
                                             medications=[_order(plan)]))
        drug_eval = next(d for d in advice.evaluation.drugs if d.drug == plan.drug)
        own = [m.recommendation.id for m in drug_eval.matches
               if m.matched_by == "lookup" and m.recommendation.population == population
               and m.guideline.source == ("DPWG" if rid.startswith("dpwg-") else "CPIC")]
        if drug_eval.matches and any(c.rule_id == NOT_INTERPRETED for c in advice.cards):
            contradicting.append((rid, drug, lookup))
        if own != [rid]:
            failures.append((rid, drug, lookup, own))
            continue
        returned += 1
        rule = drug_eval.rules.get("order-sign")
        rec = next(m.recommendation for m in drug_eval.matches if m.recommendation.id == rid)
        alerts = [p for p in drug_eval.pretests if rule is not None and p.rule.id == rule.id]
        pretest = {p.gene for p in alerts}
        if any(lookup.get(g) == NO_RESULT for g in pretest):
            # the site's pre-test alert stands for the no-result advice ("test before prescribing")
            assert any(c.pretest and c.drug == plan.drug for c in advice.cards), (rid, drug, lookup)
            continue
        # what the site's rule shows: its sources, its population when it names one (carbamazepine: CBZ naive)
        shown = {m.recommendation.id for m in advisor.renderer.chooser.order_matches(drug_eval, rule, None, None, alerts)} \
            if rule is not None else set()
        if rid in shown and advisor.renderer.policy(rule, rec) is not None:
            assert any(rid in c.recommendation_ids for c in advice.cards), (rid, drug, lookup)
            carded += 1
    return {"returned": returned, "carded": carded, "explained": explained_seen,
            "contradicting": contradicting, "failures": failures}


@pytest.fixture(scope="module")
def writer() -> LabWriter:
    return LabWriter()


def test_every_cpic_1_54_recommendation_through_the_decision_core(engine, writer):
    advisor = Advisor.build(engine)
    recs = [(f"cpic-{r['id']}", r["drug"], r["population"], r["lookup"]) for r in release_recommendations()]
    explained = {f"cpic-{i}" for i in _fixture_ids("cpic-1.54-unreachable.tsv") if i != "-"}
    started = time.perf_counter()
    got = walk(advisor, writer, recs, explained)
    seconds = time.perf_counter() - started
    print(f"CPIC 1.54 through decide: {len(recs)} recommendations, {got['returned']} returned "
          f"({got['carded']} on a card under the shipped policy), {got['explained']} explained, "
          f"{len(got['contradicting'])} contradicting, {len(got['failures'])} failing; {seconds:.1f} s")
    assert got["failures"] == [] and got["contradicting"] == []
    assert got["returned"] + got["explained"] == len(recs) == 2129


def test_every_dpwg_recommendation_through_the_decision_core(tmp_path, writer):
    """DPWG under the example policy that selects it (config/policy-examples/dpwg-beside-cpic.yaml)."""
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copy(REPO / "config" / "policy-examples" / "dpwg-beside-cpic.yaml", tmp_path / "rules" / "default.yaml")
    advisor = Advisor.build(Engine.from_knowledge(load_knowledge(tmp_path, use_cache=False)))
    recs = []
    for path in sorted((CPIC / "dpwg").glob("DPWG_*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8"))["recommendations"]:
            (chem,) = rec["relatedChemicals"]
            lookup = {g: ("/".join(a for a, n in v.items() for _ in range(int(n))) if isinstance(v, dict) else
                          _dpwg_score(v)) for g, v in rec["lookupKey"].items()}
            recs.append((f"dpwg-{rec['id']}", chem["name"], "general", lookup))
    started = time.perf_counter()
    got = walk(advisor, writer, recs, _fixture_ids("dpwg-unreachable.tsv"))
    seconds = time.perf_counter() - started
    print(f"DPWG through decide: {len(recs)} recommendations, {got['returned']} returned "
          f"({got['carded']} on a card), {got['explained']} explained, {len(got['contradicting'])} contradicting, "
          f"{len(got['failures'])} failing; {seconds:.1f} s")
    assert got["failures"] == [] and got["contradicting"] == []
    assert got["returned"] + got["explained"] == len(recs) == 529


def _dpwg_score(value: str) -> str:
    """DPWG writes a DPYD key as '1.0 (Intermediate Metabolizer)': the activity score."""
    head = value.split(" (")[0]
    return head if _score(head) is not None and "(" in value else value
