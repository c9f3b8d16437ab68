"""What a policy must pass before it is saved, approved or served: every file valid and cross-linked
(each fault with file and line), and every rule's test cases passing through the engine and card
renderer it would run on. A proposal that fails either is refused; a service that is handed one keeps
serving the version it has."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from cds.engine import Engine
from cds.errors import Diagnostic, KnowledgeError
from cds.knowledge.loader import KnowledgeBase, with_rules
from cds.pipeline import Advisor
from cds.ruletests import TestReport, run_rule_tests


class PolicyRefused(KnowledgeError):
    """A policy that does not validate or whose test cases fail; `diagnostics` say where and why."""

    def __str__(self) -> str:
        return "the policy is refused:\n" + "\n".join(f"  {d}" for d in self.diagnostics)


@dataclass
class Compiled:
    """A policy that passed: its knowledge, engine and advisor, ready to serve."""

    kb: KnowledgeBase
    engine: Engine
    advisor: Advisor
    tests: TestReport | None = field(default=None, repr=False)


def validate_files(base: KnowledgeBase, files: dict[str, str]) -> KnowledgeBase:
    """The knowledge with these rules files, validated and cross-linked (no engine: cheap enough to run as
    an author types). Raises PolicyRefused with each fault's file and line."""
    try:
        return with_rules(base, files)
    except KnowledgeError as err:
        raise PolicyRefused(err.diagnostics) from None


def compile_policy(base: KnowledgeBase, files: dict[str, str] | None = None, day: date | None = None) -> Compiled:
    """Validate, compile, and run every rule's test cases (as on `day`). Raises PolicyRefused; on success
    the engine is registered and warm. `files` None: the rules `base` already holds."""
    kb = validate_files(base, files) if files is not None else base
    engine = Engine.from_knowledge(kb)
    advisor = Advisor.build(engine)
    report = run_rule_tests(engine, advisor.renderer, day=day)
    problems = test_problems(kb, report)
    if problems:
        engine.close()
        raise PolicyRefused(problems)
    return Compiled(kb, engine, advisor, report)


def test_problems(kb: KnowledgeBase, report: TestReport) -> list[Diagnostic]:
    """Each failing test case, and each rule without one, at the line it is written on."""
    out = []
    for result in report.failed:
        index = result.rule.tests.index(result.case)
        for problem in result.problems:
            out.append(kb.diag(result.rule, f"rule {result.rule.id}, test '{result.case.name}' fails: {problem}",
                               "tests", index))
    by_id = {r.id: r for r in kb.rules}
    for rule_id in report.rules_without_tests:
        out.append(kb.diag(by_id[rule_id], f"rule {rule_id} has no test case; every rule needs one", "id"))
    return out
