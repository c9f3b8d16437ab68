"""CPIC's population codes ("CVI ACS PCI", "PHT naive", …) in words people read.

Each phrase is taken from CPIC's own wording for that population: the recommendation's comments
(clopidogrel: "For cardiovascular indications of acute coronary syndrome (ACS) and/or percutaneous
coronary intervention (PCI)", "For neurovascular indications") or its text (carbamazepine:
"If patient is carbamazepine-naïve and alternative agents are not available"; phenytoin: "previously
used phenytoin continuously for longer than three months"). The code is always shown beside the words,
so a reader can check the phrase against the guideline. tests/cards/test_populations.py asserts every
population of the shipped guidelines has words here.
"""
from __future__ import annotations

GENERAL = "general"

POPULATION_WORDS: dict[str, str] = {
    "adults": "Adults",
    "pediatrics": "Children (pediatrics)",
    # cpic-clopidogrel-cyp2c19.yaml, comments of each population's recommendations
    "CVI ACS PCI": "Cardiovascular indications: acute coronary syndrome and/or percutaneous coronary intervention",
    "CVI non-ACS non-PCI": ("Cardiovascular indications other than acute coronary syndrome or percutaneous "
                            "coronary intervention"),
    "NVI": "Neurovascular indications",
    # cpic-carbamazepine-hla-a-hla-b.yaml, recommendation texts
    "CBZ naive": "Carbamazepine-naïve",
    "CBZ use >3mos": "Carbamazepine used for longer than three months",
    "CBZ-no alternatives": "Carbamazepine-naïve, alternative agents not available",
    # cpic-fosphenytoin-phenytoin-cyp2c9-hla-b.yaml (PHT: phenytoin, the guideline's drug)
    "PHT naive": "Phenytoin-naïve",
    "PHT use >3mos": "Phenytoin used for longer than three months",
    # cpic-oxcarbazepine-hla-b.yaml (OXC: oxcarbazepine)
    "OXC naive": "Oxcarbazepine-naïve",
    "OXC use >3 mos": "Oxcarbazepine used for longer than three months",
    # cpic-efavirenz-cyp2b6.yaml
    "child >40kg_adult": "Adults and children over 40 kg",
    # cpic-aspirin-g6pd.yaml, comments: "aspirin ≤ 1 g/day"
    "<= 1g per day": "Doses of 1 g per day or less",
}

# What differs between the populations of one drug, for "advice differs by …" in a summary.
_DIMENSION = {"adults": "age group", "pediatrics": "age group", "CVI ACS PCI": "indication",
              "CVI non-ACS non-PCI": "indication", "NVI": "indication", "<= 1g per day": "dose"}


def population_words(code: str) -> str:
    """'CVI ACS PCI' → 'Cardiovascular indications: … (CVI ACS PCI)'; an unknown code as it is."""
    words = POPULATION_WORDS.get(code)
    if words is None or code.lower() in words.lower():
        return words or code
    return f"{words} ({code})"


def population_dimension(codes: set[str]) -> str:
    """What the populations of one card differ by: 'age group', 'indication' or 'population'."""
    kinds = {_DIMENSION.get(c, "population") for c in codes}
    return kinds.pop() if len(kinds) == 1 else "population"
