"""Derive guidelines/rxnorm/products.tsv from ../shared (run from the repository root):

    python guidelines/rxnorm/derive_products.py ../shared > guidelines/rxnorm/products.tsv

Keeps the clinical-drug (SCD) and branded-drug (SBD) rows of ../shared/rxnorm/scd_sbd_to_ingredient.tsv
that contain a drug of a CPIC guideline (../shared/cpic/v1.54/cpic_guidelines.tsv, column `drugs`).
Each row's ingredients are every CPIC drug with an RxNorm code (../shared/cpic/v1.54/cpic_drugs_v1.54.tsv)
whose name is a whole word of the product name. That is the source row's list plus the ingredients the
2018-era source left out because CPIC had no RxNorm code for them then (hydrocodone, glyburide, some
beta-blockers); each such addition is listed in the `added` column for review. Standard library only.
"""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

HEADER = ["rxcui", "tty", "name", "ingredient_rxcuis", "ingredient_names", "added"]


def derive(shared: Path) -> tuple[list[str], list[list[str]]]:
    with open(shared / "cpic/v1.54/cpic_drugs_v1.54.tsv", encoding="utf-8") as f:
        drugs = {r["name"].lower(): r["rxnormid"] for r in csv.DictReader(f, delimiter="\t") if r["rxnormid"].isdigit()}
    with open(shared / "cpic/v1.54/cpic_guidelines.tsv", encoding="utf-8") as f:
        guideline_drugs = {d.strip().lower() for r in csv.DictReader(f, delimiter="\t") for d in r["drugs"].split(";") if d.strip()}
    # Longest names first, so a longer name is preferred at the same position; whole words only, so
    # citalopram is not found in escitalopram nor phenytoin in fosphenytoin.
    names = sorted(drugs, key=len, reverse=True)
    pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, names)) + r")(?![a-z0-9])", re.I)
    rows = []
    with open(shared / "rxnorm/scd_sbd_to_ingredient.tsv", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            source_names = [n.lower() for n in r["cpic_ingredient_names"].split(";") if n]
            source_codes = [c for c in r["ingredient_rxcuis"].split(";") if c]
            found = sorted({m.group(1).lower() for m in pattern.finditer(r["name"])})
            if not set(found) & guideline_drugs:
                continue
            missing = [n for n in source_names if n not in found]
            if missing:
                raise SystemExit(f"{r['rxcui']}: source ingredient(s) {missing} not found in the name; review by hand")
            for name, code in zip(source_names, source_codes):
                if drugs.get(name) != code:
                    raise SystemExit(f"{r['rxcui']}: {name} is {code} in the source but {drugs.get(name)} in CPIC v1.54")
            added = [n for n in found if n not in source_names]
            rows.append([r["rxcui"], r["tty_guess"], r["name"], ";".join(drugs[n] for n in found), ";".join(found),
                         ";".join(added)])
    rows.sort(key=lambda row: int(row[0]))
    preamble = [
        "# Clinical-drug (SCD) and branded-drug (SBD) RxCUI -> RxNorm ingredient RxCUIs, for the drugs of CPIC guidelines.",
        "# Derived by guidelines/rxnorm/derive_products.py from ../shared/rxnorm/scd_sbd_to_ingredient.tsv (the CDS Hooks",
        "# sandbox's medication list, cds-hooks/sandbox src/assets/medication-list.js, Apache-2.0; an RxNorm snapshot of",
        "# about 2018, oral solids only) and CPIC database release 1.54 drug codes (CC0). `tty` is inferred from the name.",
        "# `added`: ingredients the source row lacked, found as whole words of the product name. See README.md.",
    ]
    return preamble, rows


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    preamble, rows = derive(Path(argv[1]))
    out = sys.stdout
    for line in preamble:
        out.write(line + "\n")
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
