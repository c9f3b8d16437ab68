"""What the knowledge base says for a patient and a drug, for pharmacists (`cds explain`).

Shared by the CLI and the workbench: parse `GENE=VALUE` genotype statements, interpret them, evaluate
the drugs, and present the result as text or as the JSON shape documented in the README.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cds.dosing.calculate import DoseDecision
from cds.engine import Engine, Evaluation
from cds.errors import CdsError
from cds.genotype import Interpretation, attribute_gene, interpret_value


def parse_genotype_args(engine: Engine, statements: Iterable[str]) -> dict[str, list[Interpretation]]:
    """['CYP2C19=*2/*17', "HLA-B=*57:01 positive", 'CYP2D6=score:1.0'] → gene → interpretations."""
    out: dict[str, list[Interpretation]] = {}
    for statement in statements:
        gene, sep, value = statement.partition("=")
        gene, value = gene.strip(), value.strip().strip("'\"")
        if not sep or not gene or not value:
            raise CdsError(f"--genotype '{statement}': expected GENE=VALUE, e.g. CYP2C19='*2/*17'")
        canonical = _gene_name(engine, gene)
        out.setdefault(canonical, []).append(interpret_value(engine.kb.interpreters[canonical], value))
    return out


def _gene_name(engine: Engine, gene: str) -> str:
    for known in engine.kb.interpreters:
        if known.casefold() == gene.casefold():
            return known
    raise CdsError(f"unknown gene '{gene}' (known: {', '.join(sorted(engine.kb.interpreters))})")


def explain(engine: Engine, genotypes: Iterable[str], drugs: Iterable[str], population: str | None = None,
            sources: Iterable[str] | None = None,
            statements: Mapping[str, list[Interpretation]] | None = None) -> Evaluation:
    """`sources`: guideline sources to show (CPIC, DPWG); None: those the site's policy selects.
    `statements`: results already read (e.g. a PharmCAT file: cds.pharmcat), beside the typed ones."""
    genes = parse_genotype_args(engine, genotypes)
    for gene, items in (statements or {}).items():
        genes.setdefault(gene, []).extend(items)
    return engine.evaluate(genes, list(drugs), population, sources=sources)


def drugs_with_advice(engine: Engine, genes: Iterable[str]) -> list[str]:
    """Every drug of the knowledge base whose recommendations read one of `genes` (`--pharmcat` without
    `--drug`: all the drugs a lab's results may affect)."""
    wanted = set(genes)
    return sorted({plan.drug for plan in engine.compiled.drugs.values()
                   if plan.matches and any(attribute_gene(a) in wanted for a in plan.attributes)})


@dataclass
class StatedClinical:
    """The clinical inputs of a dose as stated (`--age --height --weight --race --medication`)."""

    age: int | None = None
    height_cm: float | None = None
    weight_kg: float | None = None
    race: str | None = None
    medications: list[str] | None = None


def doses(engine: Engine, evaluation: Evaluation, clinical: StatedClinical) -> list[DoseDecision]:
    """The dose of each evaluated drug that has a dosing algorithm (warfarin), from the same core as the cards."""
    from cds.dosing.advice import stated_dose

    out = []
    for drug in evaluation.drugs:
        decision = stated_dose(engine.kb, drug.drug, evaluation.interpretations, clinical.age, clinical.height_cm,
                               clinical.weight_kg, clinical.race, clinical.medications)
        if decision is not None:
            out.append(decision)
    return out


def dose_json(decision: DoseDecision) -> dict[str, Any]:
    return {"drug": decision.algorithm.drug, "algorithm": decision.algorithm.id,
            "weekly_mg": None if decision.weekly_mg is None else round(decision.weekly_mg, 2),
            "daily_mg": None if decision.daily_mg is None else round(decision.daily_mg, 2),
            "inputs": {i.name: i.value for i in decision.inputs},
            "missing": [i.missing for i in decision.missing], "withheld": list(decision.withheld),
            "flow": [{"id": s.id, "action": s.action, "text": s.text} for s in decision.steps]}


def dose_text(decision: DoseDecision) -> list[str]:
    a = decision.algorithm
    lines = [f"  Dose ({a.name}):"]
    if decision.weekly_mg is not None:
        lines.append(f"    {decision.weekly_mg:.1f} mg/week ({decision.daily_mg:.1f} mg/day)")
    else:
        lines.append("    no genotype-guided dose: " + "; ".join(decision.withheld))
    lines += [f"    {i.name}: {i.shown}" for i in decision.inputs]
    lines += [f"    CPIC flow chart ({s.id}): {s.text}" for s in decision.steps if s.action != "dose-clinically"]
    lines.append(f"    citation: {a.citation.text()}")
    return lines


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    phenotypes = {}
    for gene, items in evaluation.interpretations.items():
        first = items[0]
        entry = {"diplotype": first.diplotype, "phenotype": first.phenotype,
                 "activity_score": first.activity_score, "lookup_key": first.lookup_key}
        if first.reason:
            entry["reason"] = first.reason
        phenotypes[gene] = entry
    recommendations = []
    for drug in evaluation.drugs:
        for m in drug.matches:
            rec = m.recommendation
            recommendations.append({
                "guideline": m.guideline.id,
                "source": m.guideline.source,
                "drug": drug.drug,
                "rxnorm": drug.rxnorm,
                "population": rec.population,
                "lookup_key": dict(rec.lookup),
                "classification": rec.classification,
                "recommendation": rec.recommendation,
                "implications": dict(rec.implications),
                "id": rec.id,
                "matched_by": m.matched_by,
                "score": m.score,
                "missing_result": {m.missing_gene: m.missing_value} if m.missing_gene else None,
                "citation": _citation(m.guideline),
            })
    undecided = [{"drug": drug.drug, "gene": gene, "phenotype": _phenotype(evaluation, gene), "scores": scores,
                  "message": _undecided_message(gene, _phenotype(evaluation, gene), scores)}
                 for drug in evaluation.drugs for gene, scores in evaluation.undecided_scores(drug).items()]
    conflicts = [{"gene": gene, "statements": list(statements),
                  "drugs": [d.drug for d in evaluation.drugs if gene in _conflicting_genes(evaluation, d)],
                  "message": _conflict_message(gene)}
                 for gene, statements in evaluation.conflicts.items()]
    unreadable = [{"gene": gene, "reasons": list(reasons),
                   "drugs": [d.drug for d in evaluation.drugs if gene in _genes_of(d, evaluation.unreadable)],
                   "message": _unreadable_message(gene)}
                  for gene, reasons in evaluation.unreadable.items()]
    result_decides = [{"drug": drug.drug, "gene": gene, "values": values, "message": _missing_message(gene, values)}
                      for drug in evaluation.drugs for gene, values in evaluation.missing_results(drug).items()]
    return {"phenotypes": phenotypes, "recommendations": recommendations,
            "score_decides": undecided, "result_decides": result_decides, "conflicts": conflicts,
            "unreadable": unreadable}


def _genes_of(drug, genes) -> list[str]:
    """Those of `genes` this drug's recommendations look up (attributes are a gene, or a gene and an
    allele of interest such as "HLA-B *57:01")."""
    return [g for g in genes if any(a == g or a.startswith(g + " ") for a in drug.facts)]


def _conflicting_genes(evaluation: Evaluation, drug) -> list[str]:
    return _genes_of(drug, evaluation.conflicts)


def _unreadable_message(gene: str) -> str:
    return (f"The {gene} result could not be interpreted in CPIC's terms, so no genotype-based recommendation "
            f"is given for {gene}. Review the result or ask the laboratory.")


def _phenotype(evaluation: Evaluation, gene: str) -> str:
    items = evaluation.interpretations.get(gene) or []
    return items[0].phenotype if items else ""


def _undecided_message(gene: str, phenotype: str, scores: list[str]) -> str:
    return (f"{gene} was reported as {phenotype} without its activity score. CPIC's advice differs between the "
            f"activity scores of a {gene} {phenotype} ({', '.join(scores)}), so the advice for each is shown, "
            f"most cautious first. The activity score decides which one applies: ask the laboratory for it.")


def _missing_message(gene: str, values: list[str]) -> str:
    return (f"No {gene} result is on file, and the source gives no advice for a missing {gene} result here: its "
            f"advice for each {gene} result ({', '.join(values)}) is shown, most cautious first. A {gene} result "
            f"decides which one applies: order {gene} genotyping.")


def _conflict_message(gene: str) -> str:
    return (f"The {gene} results disagree, so no genotype-based recommendation is given for {gene}. "
            "Confirm the result with the laboratory.")


def _citation(guideline) -> str:
    return guideline.reference()


def pharmcat_text(calls: list[dict[str, Any]], method: str, notes: list[str]) -> str:
    """The calls of a PharmCAT file as PharmCAT made them (cds.pharmcat.present.calls_json), then what
    was not used and why."""
    lines = [f"PharmCAT calls ({method})"]
    for c in calls:
        said = (c["activity_score"] and f"activity score {c['activity_score']}") or ", ".join(c["phenotypes"])
        parts = [f"  {c['gene']:8}", c["diplotype"] or "—", f"[{c['call_source']}]", c["status"]]
        if said and c["status"] == "called":
            parts.append(f"→ {said}")
        if c.get("reason"):
            parts.append(f"— {c['reason']}")
        lines.append(" ".join(parts))
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)


def to_text(evaluation: Evaluation) -> str:
    lines = []
    if evaluation.interpretations:
        lines.append("Phenotypes")
        for gene, items in evaluation.interpretations.items():
            for i in items:
                parts = [f"  {gene:8}", i.diplotype or f"(stated {i.stated_as})", "→", i.phenotype]
                if i.activity_score:
                    parts.append(f"(activity score {i.activity_score})")
                parts.append("[lookup: none — not a CPIC key]" if i.unreadable else f"[lookup: {i.lookup_key or '—'}]")
                if i.reason:
                    parts.append(f"— {i.reason}")
                lines.append(" ".join(parts))
    elif not evaluation.conflicts:
        lines.append("Phenotypes: none given")
    if evaluation.conflicts:
        lines.append("Conflicts")
        for gene, statements in evaluation.conflicts.items():
            lines.append(f"  {gene:8} {'; '.join(statements)} — {_conflict_message(gene)}")
    for drug in evaluation.drugs:
        lines.append("")
        lines.append(f"{drug.drug} (RxNorm {drug.rxnorm})" if drug.rxnorm else
                     f"{drug.drug} (no RxNorm code in the sources: matched by name)")
        for gene, scores in evaluation.undecided_scores(drug).items():
            lines.append(f"  {_undecided_message(gene, _phenotype(evaluation, gene), scores)}")
        for gene, values in evaluation.missing_results(drug).items():
            lines.append(f"  {_missing_message(gene, values)}")
        conflicting = _conflicting_genes(evaluation, drug)
        unread = _genes_of(drug, evaluation.unreadable)
        if conflicting:
            lines.append(f"  no genotype-based recommendation for {', '.join(conflicting)}: its results conflict "
                         "(see Conflicts)")
        if unread:
            lines.append(f"  no genotype-based recommendation for {', '.join(unread)}: its result could not be "
                         "interpreted (see Phenotypes)")
        if not drug.matches and not conflicting and not unread:
            lines.append("  no recommendation matches these results")
        for m in drug.matches:
            rec = m.recommendation
            label = f" {m.score_gene} activity score {m.score} —" if m.score is not None else ""
            label += f" if {m.missing_gene} is {m.missing_value} —" if m.missing_gene else ""
            graded = rec.classification or ("not graded" if m.guideline.source == "DPWG" else "no classification")
            text = rec.recommendation.replace("\n", "\n    ")  # the source's own line breaks, indented under the entry
            lines.append(f"  {m.guideline.source} [{rec.population}]{label} {graded}: {text}")
            for gene, text in rec.implications.items():
                lines.append(f"      {gene}: " + text.replace("\n", "\n        "))
            if m.matched_by == "implied phenotype":
                via = " (matched by the phenotype the result's activity score implies)"
            elif m.matched_by != "phenotype":
                via = ""
            elif m.score is None:
                via = " (matched by phenotype: every activity score of it has this recommendation)"
            else:
                via = f" (matched by phenotype; CPIC's advice for {m.score_gene} activity score {m.score})"
            lines.append(f"      lookup {dict(rec.lookup)}{via}")
            lines.append(f"      source: {m.guideline.name} — {_citation(m.guideline)} [{rec.id}]")
        for p in drug.pretests:
            lines.append(f"  pre-test alert ({p.rule.id}): no {p.gene} result on file")
    return "\n".join(lines)
