"""Read CPIC's source files (../shared/cpic) the way the tests compare against them.

Kept apart from cds/ on purpose: the tests must not reuse the importer's reading of the sources.
"""
from __future__ import annotations

import csv
import html
import json
import re

from pgx_paths import CPIC


def norm_text(value: str) -> str:
    value = html.unescape(re.sub(r"<[^>]+>", " ", value or ""))
    value = value.replace("’", "'").replace("“", '"').replace("”", '"')
    return " ".join(value.split())


def norm_class(term: str | None) -> str | None:
    if term in (None, "", "n/a", "N/A"):
        return None
    return "No Recommendation" if term.lower() == "no recommendation" else term


def population(value: str | None) -> str:
    return " ".join((value or "").split()) or "general"


def legacy_recommendations():
    """Every (guideline file, drug, population, lookup, classification, text) of the 2024 export."""
    for path in sorted((CPIC / "guidelines").glob("*.json")):
        data = json.loads(path.read_text())
        for rec in data["recommendations"]:
            for chem in rec["relatedChemicals"]:
                yield {
                    "file": path.name,
                    "drug": chem["name"],
                    "population": population(rec["population"]),
                    "lookup": rec["lookupKey"],
                    "classification": norm_class((rec.get("classification") or {}).get("term")),
                    "text": norm_text(rec["text"]["html"]),
                }


def release_recommendations():
    with (CPIC / "v1.54" / "cpic_recommendations_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            yield {
                "id": row["id"],
                "drug": row["drugname"],
                "population": population(row["population"]),
                "lookup": json.loads(row["lookupkey_json(reconstructed)"]),
                "classification": norm_class(row["classification"]),
                "text": " ".join(row["drugrecommendation"].split()),
            }


def key(rec) -> tuple:
    return rec["drug"], rec["population"], json.dumps(rec["lookup"], sort_keys=True)


# --- release 1.54, read as CPIC means it ----------------------------------------------------------

RELEASE = CPIC / "v1.54"


def read_release(name: str) -> list[dict[str, str]]:
    with (RELEASE / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def errata() -> dict[tuple[str, str, str], list[tuple[str, str]]]:
    """Our list of CPIC's typos (guidelines/errata/cpic.tsv): (table, id, field) → [(original, corrected), …]
    (a field may have several, applied in order)."""
    from pgx_paths import REPO

    lines = [line for line in (REPO / "guidelines" / "errata" / "cpic.tsv").read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    out: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for r in csv.DictReader(lines, delimiter="\t"):
        out.setdefault((r["table"], r["id"], r["field"]), []).append((r["original"], r["corrected"]))
    return out


def corrected(table: str, row: dict[str, str], field: str) -> str:
    """A field of a release row with its errata applied (each original must be in the source once)."""
    value = row[field]
    for original, fix in errata().get((table, row["id"], field), []):
        assert value.count(original) == 1, (table, row["id"], field, original)
        value = value.replace(original, fix)
    return value


def as_cpic_means(value: str) -> str:
    """The release files write a line break as the two characters backslash-n; spaces are not significant."""
    return "\n".join(" ".join(line.split()) for line in value.replace("\\n", "\n").split("\n")).strip("\n")


def release_recommendation_texts() -> dict[str, str]:
    """Recommendation id → CPIC's recommendation text as a card must show it."""
    table = "cpic_recommendations_v1.54.tsv"
    return {r["id"]: as_cpic_means(corrected(table, r, "drugrecommendation")) for r in read_release(table)}


def release_alleles(gene: str) -> dict[str, str]:
    """allele → CPIC clinical function in release 1.54 (alleles without one left out)."""
    return {r["allele"]: r["clinical_functional_status"] for r in read_release("cpic_alleles_v1.54.tsv")
            if r["gene"] == gene and r["clinical_functional_status"]}


_FUNCTION_WORDS = re.compile(r"(uncertain and/or unknown|uncertain or unknown|no|normal|decreased|increased|uncertain|unknown) function")


def result_definitions(gene: str) -> dict[tuple[str, str], tuple[str, str]]:
    """Function pair → (phenotype, row id), read from the sentence "This result signifies that the patient
    has …" of each of the gene's result texts in cpic_gene_results_cds_v1.54.tsv."""
    functions = sorted(set(release_alleles(gene).values()))

    def expand(words: str) -> list[str]:
        out = [f for w in re.split(r" and/or | or ", words) for f in functions if f.lower() == f"{w} function"]
        assert out, (gene, words, functions)
        return out

    table = "cpic_gene_results_cds_v1.54.tsv"
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for row in read_release(table):
        if row["gene"] != gene:
            continue
        text = " ".join(corrected(table, row, "consultation_text").split())
        body = re.search(r"This result signifies that the patient has (.+?)\. ", text).group(1)
        for clause in body.split(" OR "):
            clause = clause.removeprefix("inherited ")
            named = [expand(m) for m in _FUNCTION_WORDS.findall(clause)]
            if clause.startswith("two "):
                first, second = named[0], named[0]
            elif clause.startswith("one "):
                first, second = named
            elif clause.startswith("an allele combination with "):
                first, second = named[0], functions
            else:
                raise AssertionError(f"{gene}: unread definition clause {clause!r}")
            for a in first:
                for b in second:
                    pair = tuple(sorted((a, b)))
                    assert pairs.get(pair, (row["result"],))[0] == row["result"], (gene, pair)
                    pairs[pair] = (row["result"], row["id"])
    return pairs
