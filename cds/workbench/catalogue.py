"""What the workbench pages show about the running knowledge, computed once at start-up from the
compiled knowledge (so a page only looks things up): the gene × drug matrix, which rule governs
each drug on each hook, and the YAML text of every rule as it was when the service loaded it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cds.engine import Engine
from cds.knowledge.loader import KnowledgeBase
from cds.knowledge.models import Guideline, Rule
from cds.sources import rule_sources

ORDER_HOOKS = ("order-select", "order-sign")
HOOKS = ("order-select", "order-sign", "patient-view")
CLASSIFICATIONS = ("Strong", "Moderate", "Optional", "No Recommendation", None)


@dataclass
class Cell:
    """One guideline's recommendations for a drug that look up a gene."""

    guideline: Guideline
    counts: list[tuple[str, int]]            # classification label → number of recommendations


@dataclass
class DrugRow:
    drug: str
    rxnorm: str | None
    cells: dict[str, list[Cell]]             # gene → guidelines covering the pair
    rules: dict[str, Rule]                   # hook → governing rule (absent: no alert on that hook)
    silenced_by: list[Rule]                  # switched-off rules naming this drug
    compiled: bool                           # False: no RxNorm code, so the engine cannot match it
    recommendations: int
    populations: list[str]
    sources: tuple[str, ...] = ()            # guideline sources the governing rule selects (cds/sources.py)


@dataclass
class RuleSource:
    file: str
    line: int
    text: str                                # the rule's YAML with the comments just above it


@dataclass
class Catalogue:
    genes: list[str]
    rows: list[DrugRow]
    rule_sources: dict[str, RuleSource]
    governs: dict[str, dict[str, list[str]]]  # rule id → drug → hooks it governs
    guideline_rules: dict[str, list[Rule]]    # guideline id → rules that govern one of its drugs
    guideline_files: dict[str, tuple[str, int]]
    drugs: list[str] = field(default_factory=list)
    populations: list[str] = field(default_factory=list)

    def row(self, drug: str) -> DrugRow | None:
        return next((r for r in self.rows if r.drug == drug), None)


def classification_label(value: str | None) -> str:
    return value or "none given"


def build_catalogue(kb: KnowledgeBase, engine: Engine) -> Catalogue:
    drugs = kb.drugs()
    genes = sorted({g for gs in drugs.values() for guideline in gs for g in guideline.genes})
    governs: dict[str, dict[str, list[str]]] = {r.id: {} for r in kb.rules}
    rows = []
    for drug in sorted(drugs):
        plan = engine.compiled.drugs.get(drug)
        cells: dict[str, list[Cell]] = {}
        recommendations = 0
        for guideline in drugs[drug]:
            recs = [r for r in guideline.recommendations if r.drug == drug]
            recommendations += len(recs)
            for gene in guideline.genes:
                counted: Counter[str | None] = Counter(r.classification for r in recs if gene in r.lookup)
                counts = [(classification_label(c), counted[c]) for c in CLASSIFICATIONS if counted[c]]
                cells.setdefault(gene, []).append(Cell(guideline, counts))
        rules = dict(plan.rules) if plan else {}
        for hook, rule in rules.items():
            governs[rule.id].setdefault(drug, []).append(hook)
        silenced = [r for r in kb.rules if not r.enabled and r.drugs != "*" and drug in r.drugs]
        rxnorm = next((d.rxnorm for g in drugs[drug] for d in g.drugs if d.name == drug and d.rxnorm), None)
        governing = rules.get("order-sign") or rules.get("order-select")
        rows.append(DrugRow(drug, rxnorm, cells, rules, silenced, plan is not None, recommendations,
                            sorted(plan.populations) if plan else [],
                            rule_sources(kb, governing) if governing else ()))
    guideline_rules: dict[str, list[Rule]] = {}
    for guideline in kb.guidelines.values():
        names = {d.name for d in guideline.drugs}
        found: dict[str, Rule] = {}
        for rule in kb.rules:
            if rule.guideline == guideline.id or (rule.drugs != "*" and names & set(rule.drugs)) or \
                    any(d in names for d in governs.get(rule.id, {})):
                found[rule.id] = rule
        guideline_rules[guideline.id] = list(found.values())
    return Catalogue(
        genes=genes,
        rows=rows,
        rule_sources=_rule_sources(kb),
        governs=governs,
        guideline_rules=guideline_rules,
        guideline_files={gid: kb.where(g) for gid, g in kb.guidelines.items()},
        drugs=sorted(engine.compiled.drugs),
        populations=sorted({p for plan in engine.compiled.drugs.values() for p in plan.populations}),
    )


def _rule_sources(kb: KnowledgeBase) -> dict[str, RuleSource]:
    """Each rule's lines of YAML: from the comments just above its `- id:` (the top of the file for
    the first rule) to the line before the next rule's comments (or the end of the file)."""
    by_file: dict[str, list[tuple[int, Rule]]] = {}
    for rule in kb.rules:
        file, line = kb.where(rule)
        by_file.setdefault(file, []).append((line, rule))
    out: dict[str, RuleSource] = {}
    for file, located in by_file.items():
        text = kb.rule_texts.get(file)       # the policy as loaded (a database version is not on disk)
        lines = (text if text is not None else (Path(kb.root) / file).read_text(encoding="utf-8")).splitlines()
        located.sort(key=lambda item: item[0])
        # the first rule of a file takes the file's opening comment too: it states the site's reasons
        starts = [1] + [_comment_start(lines, line) for line, _ in located[1:]]
        for i, (line, rule) in enumerate(located):
            end = starts[i + 1] - 1 if i + 1 < len(located) else len(lines)
            body = lines[starts[i] - 1:end]
            while body and not body[-1].strip():
                body.pop()
            out[rule.id] = RuleSource(file, line, "\n".join(body))
    return out


def _comment_start(lines: list[str], line: int) -> int:
    """The first line of the comment block directly above `line` (1-based), or `line` itself."""
    start = line
    while start > 1 and lines[start - 2].lstrip().startswith("#"):
        start -= 1
    return start
