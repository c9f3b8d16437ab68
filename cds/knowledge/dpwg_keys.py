"""DPWG's lookup keys in our gene tables' terms: `map_key` reads one DPWG (gene, value) as the key our
tables produce, or says why they cannot. The DPWG importer (`cds import dpwg`) writes the guidelines with
it, and `cds validate` checks with it that a recommendation listed as unreachable still is
(cds.knowledge.reachability). Kept apart from the importer, so that loading the knowledge imports no
importer: the importers are offline tools, never on the request path.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

from cds.genotype import GeneInterpreter, parse_score

SOURCE_PREFIX = "DPWG"           # every DPWG recommendation's `source` starts with it (see cds/cards/policy.py)
_DPYD_KEY = re.compile(r"^(\d+(?:\.\d+)?) \((.+)\)$")
ALLELE_STATUS = re.compile(r"(\*\S+) (positive|negative)")   # an HLA key: "*15:11 positive"


class MappedKey(NamedTuple):
    """Our lookup value for a DPWG key, or why our gene tables cannot produce it (exactly one is set)."""

    key: str | None
    unreachable: str | None


def _unreachable(why: str) -> MappedKey:
    return MappedKey(None, why)


def _key_text(value: Any) -> str:
    """A DPWG lookup value as text: genotype keys ({"*1": 1, "*3": 1}) as the diplotype '*1/*3'."""
    if isinstance(value, dict):
        alleles = [name for name, count in value.items() for _ in range(int(count))]
        return "/".join(alleles)
    return str(value)


def map_key(gene: str, value: Any, interpreters: dict[str, GeneInterpreter]) -> MappedKey:
    """One DPWG (gene, lookup value) → (our lookup value, None) or (None, why our tables cannot reach it)."""
    interp = interpreters.get(gene)
    if interp is None:
        return _unreachable(f"no {gene} gene table in guidelines/genes (CPIC publishes none); DPWG keys this by "
                            f"{gene} '{_key_text(value)}'")
    if isinstance(value, dict) or (interp.kind != "allele-status" and "/" in value):
        return _genotype_key(gene, _key_text(value), interp)
    if interp.kind == "allele-status":
        m = ALLELE_STATUS.fullmatch(value)
        together = re.fullmatch(r"(\d{2})(\d{2}) and (\d{2})(\d{2})", value)
        if together:
            # DPWG's key for carrying both (its text: no recommendation for the pair); the engine matches
            # a carrier of both by each allele's own key, so such a patient is not left without advice
            first, second = (f"*{together.group(i)}:{together.group(i + 1)}" for i in (1, 3))
            return _unreachable(f"{gene} key '{value}' names {gene}{first} and {gene}{second} together; a patient "
                                f"positive for both is matched by each allele's own key ('{first} positive', "
                                f"'{second} positive')")
        if not m:
            return _unreachable(f"{gene} key '{value}' is not an allele status ('<allele> positive|negative')")
        if m.group(1) not in interp.alleles_of_interest:
            return _unreachable(f"{gene}{m.group(1)} is not an allele of interest of our {gene} table "
                                f"({', '.join(interp.alleles_of_interest)})")
        return MappedKey(value, None)
    if interp.kind == "activity-score":
        m = _DPYD_KEY.match(value)
        if m:
            score, label = m.group(1), m.group(2)
            if label == "Phenotyping":
                return _unreachable(f"keyed by measured {gene} enzyme activity ('{value}': phenotyping), "
                                    "which a genotype table cannot produce")
            return _score_key(gene, score, interp, label)
        if parse_score(value) is not None:
            return _score_key(gene, value, interp, None)
        if value in interp.phenotypes:
            return MappedKey(value, None)  # matched by a result reported as this phenotype
        return _unreachable(f"our {gene} table produces no phenotype or activity score '{value}'")
    if value in interp.phenotypes:
        return MappedKey(value, None)
    return _unreachable(f"our {gene} table produces no phenotype '{value}' "
                        f"(it produces: {', '.join(interp.phenotypes)})")


def _genotype_key(gene: str, text: str, interp: GeneInterpreter) -> MappedKey:
    """A genotype key ({"*1": 1, "*3": 1}, written '*1/*3'): matched as that genotype when our table
    names both alleles."""
    key = interp.genotype_of_key(text)
    if key is None:
        unknown = [a for a in text.split("/") if interp.genotype_of_key(f"{a}/{a}") is None]
        return _unreachable(f"keyed by the {gene} genotype {text}; our {gene} table has no allele "
                            f"{', '.join(unknown) or text}")
    return MappedKey(key, None)


def _score_key(gene: str, score: str, interp: GeneInterpreter, phenotype: str | None) -> MappedKey:
    if score not in interp.possible_scores():
        return _unreachable(f"no two alleles of our {gene} table sum to the activity score {score}")
    ours = interp.phenotype_for_score(score)
    if phenotype is not None and ours != phenotype:
        return _unreachable(f"DPWG names {gene} activity score {score} '{phenotype}', our table '{ours}'")
    return MappedKey(score, None)
