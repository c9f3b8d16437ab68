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
