"""Source recommendations our gene tables cannot reach: listed by `cds validate` with file and line, and
kept honest (one the tables can reach after all is an error, so a new gene table shows up here).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cds.errors import Diagnostic

if TYPE_CHECKING:
    from cds.knowledge.loader import KnowledgeBase


def unreachable_notes(kb: KnowledgeBase) -> list[Diagnostic]:
    """One note per unreachable recommendation: file, line, drug, the source's key and why."""
    notes = []
    for g in sorted(kb.guidelines.values(), key=lambda g: g.id):
        for i, rec in enumerate(g.unreachable):
            key = ", ".join(f"{gene} {value}" for gene, value in rec.source_key.items())
            notes.append(kb.diag(g, f"{g.source} recommendation {rec.id} ({rec.drug}; {key}) cannot be reached: "
                                    f"{rec.reason}", "unreachable", i))
    return sorted(notes)


def check_unreachable(kb: KnowledgeBase) -> list[Diagnostic]:
    from cds.knowledge.dpwg_keys import map_key

    diags = []
    for g in kb.guidelines.values():
        for i, rec in enumerate(g.unreachable):
            if g.source != "DPWG":
                continue   # genotype keys are in source_key as '*1/*3', which map_key reads as a genotype
            mapped = [map_key(gene, value, kb.interpreters) for gene, value in rec.source_key.items()]
            if all(reason is None for _, reason in mapped):
                diags.append(kb.diag(g, f"recommendation {rec.id} is listed as unreachable, but the gene tables now "
                                        f"reach its key {dict(rec.source_key)}: run `cds import dpwg` again",
                                     "unreachable", i))
    return diags
