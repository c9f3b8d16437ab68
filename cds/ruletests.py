"""`cds test`: run the test cases written next to each rule through the same engine and card renderer
the service uses, report pass/fail with the difference, and report coverage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from cds.cards import CardRenderer, RenderedCard
from cds.engine import Engine
from cds.errors import CdsError
from cds.explain import parse_genotype_args
from cds.knowledge.models import CaseExpectation, Rule, RuleTestCase


@dataclass
class CaseResult:
    rule: Rule
    case: RuleTestCase
    problems: list[str] = field(default_factory=list)
    cards: list[RenderedCard] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class TestReport:
    results: list[CaseResult]
    rules_without_tests: list[str]
    coverage: dict[str, dict[str, tuple[set[str], set[str]]]]   # drug → gene → (tested, all phenotypes)
    day: date | None = None                                     # `--as-of`: every case ran as on this day

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]


def case_day(rule: Rule, day: date | None = None) -> date:
    """The day a rule's cases run on: `day` when given (`cds test --as-of`); else today, or, for a rule not
    in force today, the first day it is in force (a scheduled rule) or its last (an expired one), so a
    rule dated for next month is tested as it will be, and does not hold up today's policy."""
    if day is not None:
        return day
    today = date.today()
    if rule.effective_from is not None and today < rule.effective_from:
        return rule.effective_from
    if rule.effective_until is not None and rule.effective_until < today:
        return rule.effective_until
    return today


def run_case(engine: Engine, renderer: CardRenderer, rule: Rule, case: RuleTestCase,
             day: date | None = None) -> CaseResult:
    """Run one test case; `day`: the date whose rules are in force (default: see `case_day`)."""
    result = CaseResult(rule, case)
    day = case_day(rule, day)
    try:
        genotypes = parse_genotype_args(engine, [f"{g}={v}" for g, v in case.genotypes.items()])
        evaluation = engine.evaluate(genotypes, case.drugs, case.population, day=day)
    except CdsError as err:
        result.problems.append(f"could not evaluate: {err}")
        return result
    # the cards the service gives for these results: the recommendations' and, as the service says them,
    # a typed result that is no CPIC key ("could not be interpreted") and results that conflict
    result.cards = renderer.order_cards(evaluation, case.hook, population=case.population)
    result.cards += renderer.notices.uninterpretable_cards(case.hook, evaluation, evaluation.unreadable)
    result.cards += renderer.notices.conflict_cards(case.hook, evaluation)
    unmatched = list(result.cards)
    for i, expected in enumerate(case.expect, 1):
        card = next((c for c in unmatched if not _mismatches(c, expected)), None)
        if card is None:
            closest = min(unmatched, key=lambda c: len(_mismatches(c, expected)), default=None)
            why = "; ".join(_mismatches(closest, expected)) if closest else "no card was produced"
            result.problems.append(f"expected card {i} not found: {why}")
        else:
            unmatched.remove(card)
    for card in unmatched:
        result.problems.append(f"unexpected card: [{card.indicator}] {card.card['summary']}")
    return result


def _mismatches(rendered: RenderedCard, expected: CaseExpectation) -> list[str]:
    card = rendered.card
    out = []
    if expected.indicator and card["indicator"] != expected.indicator:
        out.append(f"indicator is {card['indicator']}, expected {expected.indicator}")
    if expected.pretest != rendered.pretest:
        out.append("expected a pre-test card" if expected.pretest else "got a pre-test card")
    for words in expected.summary_contains:
        if words.lower() not in card["summary"].lower():
            out.append(f"summary {card['summary']!r} lacks {words!r}")
    if expected.sources and rendered.sources != list(expected.sources):
        out.append(f"card rests on {', '.join(rendered.sources) or 'no guideline'}, expected "
                   f"{', '.join(expected.sources)}")
    offered = {a["resource"].get("medicationCodeableConcept", {}).get("text", "").lower()
               for s in card.get("suggestions", []) for a in s["actions"]
               if a["type"] == "create" and a["resource"].get("resourceType") == "MedicationRequest"}
    if expected.suggests is None:
        return out
    if not expected.suggests and offered:
        out.append(f"expected no suggestion, offered: {', '.join(sorted(offered))}")
    for name in expected.suggests:
        if name.lower() not in offered:
            out.append(f"no suggestion of {name} (offered: {', '.join(sorted(offered)) or 'none'})")
    return out


def run_rule_tests(engine: Engine, renderer: CardRenderer, rule_ids: list[str] | None = None,
                   day: date | None = None) -> TestReport:
    rules = [r for r in engine.kb.rules if not rule_ids or r.id in rule_ids]
    if rule_ids:
        unknown = set(rule_ids) - {r.id for r in rules}
        if unknown:
            raise CdsError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    results = [run_case(engine, renderer, rule, case, day) for rule in rules for case in rule.tests]
    return TestReport(results, [r.id for r in rules if not r.tests], coverage(engine, rules), day)


def coverage(engine: Engine, rules: list[Rule]) -> dict[str, dict[str, tuple[set[str], set[str]]]]:
    """For each drug with a test case, which phenotypes of its genes the cases exercise."""
    kb = engine.kb
    tested: dict[str, dict[str, set[str]]] = {}
    for rule in rules:
        for case in rule.tests:
            try:
                genotypes = parse_genotype_args(engine, [f"{g}={v}" for g, v in case.genotypes.items()])
            except CdsError:
                continue
            for drug in case.drugs:
                per_gene = tested.setdefault(drug, {})
                for guideline in kb.drugs().get(drug, []):
                    for gene in guideline.genes:
                        if gene not in kb.interpreters:
                            continue
                        seen = per_gene.setdefault(gene, set())
                        if gene in genotypes:
                            seen.update(i.phenotype for i in genotypes[gene])
                        else:
                            seen.add("No Result")
    out: dict[str, dict[str, tuple[set[str], set[str]]]] = {}
    for drug, genes in sorted(tested.items()):
        out[drug] = {}
        for gene, seen in sorted(genes.items()):
            interp = kb.interpreters[gene]
            if interp.kind == "allele-status":
                plan = engine.drug_plan(drug)
                relevant = {a for a, g in plan.attributes.items() if g == gene} if plan else set()
                everything = {v for attr, vals in interp.lookup_values().items() if attr in relevant for v in vals}
                seen = {part.strip() for s in seen for part in s.split(";")}
            else:
                everything = set(interp.phenotypes)
            everything |= {"No Result"}
            out[drug][gene] = (seen & everything, everything)
    return out


def format_report(report: TestReport) -> str:
    lines = []
    for r in report.results:
        mark = "PASS" if r.passed else "FAIL"
        on = case_day(r.rule, report.day)
        lines.append(f"{mark}  {r.rule.id}: {r.case.name}" + (f"  (as of {on})" if on != date.today() else ""))
        for p in r.problems:
            lines.append(f"        - {p}")
    lines.append("")
    lines.append(f"{len(report.results) - len(report.failed)} passed, {len(report.failed)} failed")
    if report.rules_without_tests:
        lines.append(f"rules without test cases: {', '.join(report.rules_without_tests)}")
    lines.append("")
    lines.append("Coverage (phenotypes with a test case / phenotypes the gene table can produce):")
    for drug, genes in report.coverage.items():
        for gene, (seen, everything) in genes.items():
            missing = sorted(everything - seen)
            lines.append(f"  {drug:16} {gene:8} {len(seen)}/{len(everything)}"
                         + (f"  untested: {', '.join(missing)}" if missing else ""))
    return "\n".join(lines)
