"""The patient's pharmacogenomic summary page's content: every result with its CPIC interpretation and
every drug of the knowledge base those results affect, with CPIC's full advice (implications and
comments included: the long form the card's short detail leaves out).

Built from the same decision core as the cards (interpreters, engine, the card renderer's policy and
statements), so the page cannot say something a card would not.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cds.cards import CardRenderer, Statement, most_cautious
from cds.errors import CdsError
from cds.genotype import Interpretation, interpret_value

MAX_APP_CONTEXT = 64_000      # characters; a patient's results are a few hundred


@dataclass
class ResultRow:
    gene: str
    reported: str                      # as the result stated it (diplotype, score, phenotype, allele status)
    phenotype: str | None = None
    activity_score: str | None = None
    date: str | None = None
    lab: str | None = None
    sources: list[str] = field(default_factory=list)
    consultation: str | None = None    # CPIC's post-test interpretation of this result
    priority: str | None = None        # CPIC's EHR priority
    problem: str | None = None         # why it could not be interpreted


@dataclass
class AffectedDrug:
    drug: str
    indicator: str
    rule_id: str
    statements: list[Statement]


@dataclass
class Summary:
    results: list[ResultRow]
    drugs: list[AffectedDrug]
    conflicts: dict[str, list[str]]
    focus: str | None = None           # the drug the card was about
    evaluation: Any = None             # the engine's Evaluation the page rests on (downloads are made from it)
    # why the results shown may not be all the patient's (read from the EHR: a page that could not be read,
    # more pages than read): the page says so, so "no drug affected" never reassures wrongly
    incomplete: list[str] = field(default_factory=list)


def parse_app_context(text: str | None) -> dict[str, Any]:
    """appContext as cds.cards.app_context writes it; CdsError with the reason otherwise."""
    if not text:
        raise CdsError("no appContext: open this page from a card's 'Open pharmacogenomic summary' link")
    if len(text) > MAX_APP_CONTEXT:
        raise CdsError(f"appContext is longer than {MAX_APP_CONTEXT} characters")
    try:
        body = json.loads(text)
    except ValueError as err:
        raise CdsError(f"appContext is not JSON: {err}") from None
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise CdsError("appContext must be a JSON object with a 'results' list")
    return body


def build_summary(engine, renderer: CardRenderer, context: dict[str, Any]) -> Summary:
    kb = engine.kb
    rows: list[ResultRow] = []
    genotypes: dict[str, list[Interpretation]] = {}
    for item in context["results"]:
        if (not isinstance(item, dict) or not isinstance(item.get("gene"), str)
                or not isinstance(item.get("value"), str)):
            rows.append(ResultRow(gene=str(item.get("gene", "?")) if isinstance(item, dict) else "?", reported="",
                                  problem="not a result: needs 'gene' and 'value' strings"))
            continue
        listed = item.get("source")
        sources = [s for s in listed if isinstance(s, str)] if isinstance(listed, list) else []
        row = ResultRow(gene=item["gene"], reported=item["value"].removeprefix("score:"),
                        date=item.get("date") if isinstance(item.get("date"), str) else None,
                        lab=item.get("lab") if isinstance(item.get("lab"), str) else None, sources=sources)
        rows.append(row)
        interpreter = kb.interpreters.get(item["gene"])
        if interpreter is None:
            row.problem = "no CPIC gene table for this gene in the knowledge base"
            continue
        try:
            interp = interpret_value(interpreter, item["value"], tuple(sources))
        except CdsError as err:
            row.problem = str(err)
            continue
        row.phenotype, row.activity_score = interp.phenotype, interp.activity_score
        table = kb.genes.get(item["gene"])
        text = next((r for r in (table.results if table else []) for key in interp.lookup.values() if r.result == key),
                    None)
        if text:
            row.consultation, row.priority = text.consultation, text.priority
        genotypes.setdefault(item["gene"], []).append(interp)
    evaluation = engine.evaluate(genotypes, sorted(engine.compiled.drugs))
    affected = []
    for drug in evaluation.drugs:
        rule = drug.rules.get("order-sign") or drug.rules.get("order-select")
        if rule is None:
            continue
        statements = renderer.statements(rule, list(drug.matches))
        carded = [s for s in statements if s.policy]
        if carded:
            indicators = [s.policy.indicator for s in carded if s.policy]
            affected.append(AffectedDrug(drug.drug, most_cautious(indicators), rule.id, statements))
    unreadable = context.get("unreadable")
    for gene, reasons in sorted(unreadable.items() if isinstance(unreadable, dict) else []):
        if isinstance(gene, str) and isinstance(reasons, list):
            rows.append(ResultRow(gene=gene, reported="", problem="; ".join(str(r) for r in reasons)))
    incomplete = [str(x) for x in context.get("incomplete", []) if isinstance(x, str)] \
        if isinstance(context.get("incomplete"), list) else []
    focus = context.get("drug") if isinstance(context.get("drug"), str) else None
    rank = {"critical": 0, "warning": 1, "info": 2}
    affected.sort(key=lambda d: (d.drug != focus, rank.get(d.indicator, 3), d.drug))
    conflicts = dict(evaluation.conflicts)
    if isinstance(context.get("conflicts"), dict):   # read from the EHR: results that disagree on file
        conflicts.update({g: [str(i) for i in ids] for g, ids in context["conflicts"].items() if isinstance(ids, list)})
    return Summary(rows, affected, conflicts, focus, evaluation, incomplete)
