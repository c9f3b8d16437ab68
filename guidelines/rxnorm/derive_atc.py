"""Derive guidelines/rxnorm/atc.tsv from ../shared (run from the repository root):

    python guidelines/rxnorm/derive_atc.py ../shared > guidelines/rxnorm/atc.tsv

CPIC database release 1.54's drug table (../shared/cpic/v1.54/cpic_drugs_v1.54.tsv, CC0) lists, per drug,
the WHO ATC codes of products containing it (column `atc_codes(2020 bootstrap)`). Only chemical-substance
codes (level 5, e.g. B01AC04) of drugs with an RxNorm ingredient code are kept; a level-5 code listed under
several CPIC drugs is a combination of them (J05AR02 abacavir and lamivudine) and maps to all of them. Group
codes (C09AA "ACE inhibitors, plain") name no single drug and are left out. Standard library only.
"""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

HEADER = ["atc", "ingredient_rxcuis", "ingredient_names"]
LEVEL5 = re.compile(r"^[A-Z]\d{2}[A-Z]{2}\d{2}$")


def derive(shared: Path) -> list[list[str]]:
    by_code: dict[str, set[tuple[str, str]]] = {}
    with open(shared / "cpic/v1.54/cpic_drugs_v1.54.tsv", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if not r["rxnormid"].isdigit():
                continue
            for code in (c.strip() for c in r["atc_codes(2020 bootstrap)"].split(",")):
                if LEVEL5.match(code):
                    by_code.setdefault(code, set()).add((r["name"].lower(), r["rxnormid"]))
    rows = []
    for code in sorted(by_code):
        drugs = sorted(by_code[code])
        rows.append([code, ";".join(c for _, c in drugs), ";".join(n for n, _ in drugs)])
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("# WHO ATC level-5 code -> RxNorm ingredient RxCUIs of the CPIC drugs it contains.")
    print("# Derived by guidelines/rxnorm/derive_atc.py from CPIC database release 1.54, cpic_drugs_v1.54.tsv (CC0).")
    print("\t".join(HEADER))
    for row in derive(Path(argv[1])):
        print("\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
