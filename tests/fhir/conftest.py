"""pytest fixtures for the FHIR reading tests: the ingredient list the knowledge base would pass to the
MedicationResolver, built from CPIC 1.54's drug table, and a resolver built from it."""
from __future__ import annotations

import csv

import pytest
from fhir_fixtures import SHARED


@pytest.fixture(scope="session")
def cpic_ingredients() -> dict[str, str]:
    """lower-case ingredient name → RxNorm ingredient code (`name`, `rxnormid` of cpic_drugs_v1.54.tsv)."""
    path = SHARED / "cpic" / "v1.54" / "cpic_drugs_v1.54.tsv"
    if not path.exists():
        pytest.skip("../shared/cpic/v1.54/cpic_drugs_v1.54.tsv is not present")
    with open(path, encoding="utf-8") as f:
        return {r["name"].lower(): r["rxnormid"] for r in csv.DictReader(f, delimiter="\t") if r["rxnormid"].isdigit()}


@pytest.fixture(scope="session")
def resolver(cpic_ingredients):
    from cds.fhir.medications import MedicationResolver

    return MedicationResolver(cpic_ingredients)
