"""The HLA alleles each source keys recommendations by, read from the sources themselves: CPIC's
release allele table (../shared/cpic/v1.54) and the lookup keys of PharmGKB's DPWG export
(../shared/cpic/dpwg). Tests compare our HLA tables and readings with these, not with our YAML."""
from __future__ import annotations

import csv
import json
import re
from functools import cache

from pgx_paths import CPIC


@cache
def cpic_hla_alleles(gene: str) -> set[str]:
    with (CPIC / "v1.54" / "cpic_alleles_v1.54.tsv").open(encoding="utf-8", newline="") as f:
        return {row["allele"] for row in csv.DictReader(f, delimiter="\t") if row["gene"] == gene}


@cache
def dpwg_hla_alleles(gene: str) -> set[str]:
    """Alleles of DPWG keys written '<allele> positive|negative' for this gene."""
    out = set()
    for path in sorted((CPIC / "dpwg").glob("DPWG_*.json")):
        for rec in json.loads(path.read_text(encoding="utf-8"))["recommendations"]:
            value = (rec.get("lookupKey") or {}).get(gene)
            status = re.fullmatch(r"(\*\S+) (positive|negative)", value) if isinstance(value, str) else None
            if status:
                out.add(status.group(1))
    return out


def dpwg_only_hla_alleles(gene: str) -> set[str]:
    return dpwg_hla_alleles(gene) - cpic_hla_alleles(gene)
