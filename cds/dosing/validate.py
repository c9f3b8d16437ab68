"""Cross-file checks of the dosing algorithms: the drug, guideline, genes, genotypes and phenotypes each file
names must be ones the knowledge base has, so a typo is a `file:line` message, never a silent miss."""
from __future__ import annotations

from typing import TYPE_CHECKING

from cds.errors import Diagnostic

if TYPE_CHECKING:
    from cds.dosing.models import DosingAlgorithm
    from cds.knowledge.loader import KnowledgeBase


def check_dosing(kb: KnowledgeBase) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for algorithm in kb.dosing.values():
        diags += _check_links(kb, algorithm)
        diags += _check_genotypes(kb, algorithm)
    return diags


def _check_links(kb: KnowledgeBase, a: DosingAlgorithm) -> list[Diagnostic]:
    out = []
    guideline = kb.guidelines.get(a.guideline)
    if guideline is None:
        out.append(kb.diag(a, f"dosing {a.id}: unknown guideline '{a.guideline}'", "guideline"))
    elif a.drug not in {d.name for d in guideline.drugs}:
        out.append(kb.diag(a, f"dosing {a.id}: guideline {a.guideline} has no drug '{a.drug}'", "drug"))
    for i, gene in enumerate(a.genes):
        if gene not in kb.genes:
            out.append(kb.diag(a, f"dosing {a.id}: unknown gene '{gene}' (no gene table)", "genes", i))
    return out


def _check_genotypes(kb: KnowledgeBase, a: DosingAlgorithm) -> list[Diagnostic]:
    out = []
    for i, term in enumerate(a.categorical):
        if term.input not in kb.interpreters:
            continue
        interp = kb.interpreters[term.input]
        for value in term.coefficients:
            reading = interp.from_diplotype(value)
            if reading.indeterminate or (reading.lookup_key != value and reading.diplotype != value):
                out.append(kb.diag(a, f"dosing {a.id}: the {term.input} table cannot produce '{value}'",
                                   "categorical", i, "coefficients", value))
    for i, step in enumerate(a.flow):
        cyp2c9 = kb.interpreters.get("CYP2C9")
        for value in step.cyp2c9_phenotypes:
            if cyp2c9 is None or value not in cyp2c9.phenotypes:
                out.append(kb.diag(a, f"dosing {a.id}: flow {step.id}: CYP2C9 has no phenotype '{value}'", "flow", i))
        for gene, alleles in step.carries.items():
            table = kb.genes.get(gene)
            missing = [x for x in alleles if table is None or x not in table.alleles]
            if missing:
                out.append(kb.diag(a, f"dosing {a.id}: flow {step.id}: {gene} has no allele(s) {', '.join(missing)}",
                                   "flow", i, "carries"))
    return out
