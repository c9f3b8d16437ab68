"""PharmCAT's calls in CPIC's terms: the statements the engine reads, as a typed `--genotype` would give.

PharmCAT's own result for a gene comes first — the activity score for an activity-score gene, else
the phenotype, or the allele statuses of an HLA gene: the key PharmCAT looks CPIC's advice up with.
Beside it the diplotype is read with the gene table (the one parser every face uses,
cds.genotype.interpret_value), so a diplotype our CPIC table reads differently from PharmCAT is a
conflict, said as any conflict is, never a silent choice. A diplotype our table cannot read (an
allele newer than its CPIC release) does not undo PharmCAT's call; the note says so.

- *no result* (PharmCAT's "No Result"): no statement, a note — the gene has no result, as if absent.
- *Indeterminate* (several diplotypes, a combination call): Indeterminate with PharmCAT's reason.
- PharmCAT's phenotype "n/a" (it assigns none, e.g. an allele it gives no function): Indeterminate,
  the reason naming the diplotype and its functions.
- a result our table has no term for: the diplotype alone, noted; neither readable: Indeterminate.
- a gene without a gene table here (CYP3A4, VKORC1…): not interpreted, noted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cds.errors import CdsError
from cds.genotype import GeneInterpreter, Interpretation, interpret_value
from cds.pharmcat.model import CALLED, INDETERMINATE, NO_RESULT, CalledDiplotype, GeneCall, PharmcatResults

NOT_ASSIGNED = "n/a"           # PharmCAT's phenotype/lookup key when it assigns none
_STATUS = re.compile(r"^\s*(\S+)\s+(positive|negative)\s*$", re.IGNORECASE)


@dataclass
class PharmcatReading:
    """A PharmCAT file read in CPIC's terms: the statements per gene, and what was not used and why."""

    results: PharmcatResults
    interpretations: dict[str, list[Interpretation]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)          # per gene: no result, not interpreted, checks
    no_result: list[str] = field(default_factory=list)      # genes PharmCAT has no call for


def source_id(gene: str) -> str:
    """How a statement read from PharmCAT names its source in cards and audit (never a file or sample
    name: those may carry the patient's identity)."""
    return f"PharmCAT {gene} call"


def interpret_calls(interpreters: Mapping[str, GeneInterpreter], results: PharmcatResults) -> PharmcatReading:
    """Every call of `results` as statements for the engine (`Engine.evaluate`'s genotypes)."""
    reading = PharmcatReading(results)
    by_folded = {gene.casefold(): gene for gene in interpreters}
    for call in results.calls:
        if call.status == NO_RESULT:
            reading.no_result.append(call.gene)
            reading.notes.append(f"{call.gene}: {call.reason}")
            continue
        gene = by_folded.get(call.gene.casefold())
        if gene is None:
            reading.notes.append(f"{call.gene}: no {call.gene} gene table in the knowledge base; PharmCAT's call "
                                 f"{call.diplotype or _stated_words(call.diplotypes[0])} not interpreted")
            continue
        statements, notes = interpret_call(interpreters[gene], call)
        reading.interpretations[gene] = statements
        reading.notes.extend(f"{gene}: {n}" for n in notes)
    return reading


def interpret_call(interpreter: GeneInterpreter, call: GeneCall) -> tuple[list[Interpretation], list[str]]:
    """One call (status called or Indeterminate) as statements, and notes on what was not used."""
    ids = (source_id(interpreter.gene),)
    if call.status == INDETERMINATE:
        return [interpreter.indeterminate(call.reason or "PharmCAT could not call it", call.diplotype, ids)], []
    if call.status != CALLED:
        raise ValueError(f"no statements for a call of status {call.status!r}")
    called = call.diplotypes[0]
    if _not_assigned(called):
        # PharmCAT's own answer is "no phenotype": Indeterminate, with the diplotype and its functions in
        # the reason, so whoever reads it sees what PharmCAT did not assign (e.g. an outside call's allele
        # spelled in a way PharmCAT did not recognise) rather than a bare "Indeterminate".
        functions = f" (allele function: {', '.join(called.functions)})" if called.functions else ""
        reason = f"PharmCAT assigns {called.text or 'this call'}{functions} no phenotype ({NOT_ASSIGNED})"
        return [interpreter.indeterminate(reason, called.text, ids)], []
    read = _read_diplotype(interpreter, called.text, ids)
    stated, problem = _stated(interpreter, called, ids)
    notes = []
    if stated:
        if read is not None and read.indeterminate:
            notes.append(f"PharmCAT's diplotype {called.text} could not be checked against the gene table "
                         f"({read.reason}); PharmCAT's call is used")
            read = None
        return stated + ([read] if read is not None else []), notes
    if read is not None and not read.indeterminate:
        return [read], [problem] if problem else []
    reasons = "; ".join(r for r in (problem, read.reason if read is not None else None) if r)
    return [interpreter.indeterminate(reasons or "nothing readable was stated", called.text, ids)], []


def _not_assigned(called: CalledDiplotype) -> bool:
    """PharmCAT says it assigns no phenotype (its "n/a"), rather than stating none at all."""
    keys = called.lookup_keys or called.phenotypes
    return bool(keys) and all(k == NOT_ASSIGNED for k in keys) and called.activity_score in (None, NOT_ASSIGNED)


def _stated(interpreter: GeneInterpreter, called: CalledDiplotype,
            ids: tuple[str, ...]) -> tuple[list[Interpretation], str | None]:
    """PharmCAT's own result as statements in the gene table's terms, or why it cannot be."""
    try:
        if interpreter.kind == "activity-score" and called.activity_score:
            stated = interpreter.from_score(called.activity_score, ids)
            if stated.indeterminate:
                return [], f"PharmCAT's activity score {called.activity_score}: {stated.reason}"
            return [stated], None
        if interpreter.kind == "allele-status":
            return _statuses(interpreter, called.phenotypes, ids), None
        phenotypes = [p for p in called.phenotypes if p != NOT_ASSIGNED]
        if not phenotypes:
            return [], None
        return [interpreter.from_phenotype(p, ids) for p in phenotypes], None
    except CdsError as err:
        return [], f"PharmCAT's result is not in the gene table's terms ({err}); the diplotype is read instead"


def _statuses(interpreter: GeneInterpreter, phenotypes: tuple[str, ...], ids: tuple[str, ...]) -> list[Interpretation]:
    """'*57:01 positive', '*58:01 negative' → one statement per allele of interest of our table."""
    out = []
    for phenotype in phenotypes:
        found = _STATUS.match(phenotype)
        if found is None:
            raise CdsError(f"'{phenotype}' is not an allele status ('*57:01 positive')")
        allele = found.group(1)
        if any(allele == a for a in interpreter.alleles_of_interest):
            out.append(interpreter.from_allele_status(allele, found.group(2).lower() == "positive", ids))
    return out


def _read_diplotype(interpreter: GeneInterpreter, text: str | None, ids: tuple[str, ...]) -> Interpretation | None:
    if not text:
        return None
    try:
        return interpret_value(interpreter, text, ids)
    except CdsError as err:      # e.g. one allele name the table reads as neither allele nor phenotype
        return interpreter.indeterminate(str(err), text, ids)


def _stated_words(called: CalledDiplotype) -> str:
    return ", ".join(called.phenotypes) or called.activity_score or "(nothing stated)"
