"""What a pharmacist tripped over in rules/ (issue 22, item 8): a rule dated for tomorrow must start
tomorrow without a restart, `cds test --as-of` runs the cases as on a given day, and `suggests: []`
in a test case means "no suggestion", not "anything goes"."""
from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date, timedelta

import pytest

from pgx_paths import REPO

TOMORROW = date.today() + timedelta(days=1)
# Citalopram is governed by the default rule; a site rule wording it differently starts tomorrow.
DATED_RULE = f"""
rules:
  - id: citalopram-from-tomorrow
    title: Citalopram — local wording from tomorrow
    guideline: cpic-citalopram-escitalopram-cyp2c19
    drugs: [citalopram]
    effective_from: {TOMORROW.isoformat()}
    summary: '{{Drug}}: {{results}} — consult the psychiatry pharmacist'
    tests:
      - name: the local wording, once in force
        genotypes: {{CYP2C19: '*2/*2'}}
        drugs: [citalopram]
        expect:
          - summary_contains: [psychiatry pharmacist]
"""


@pytest.fixture()
def knowledge(tmp_path):
    root = tmp_path / "kb"
    for part in ("guidelines", "rules", "hooks"):
        shutil.copytree(REPO / part, root / part)
    return root


def _cds(*args):
    return subprocess.run([sys.executable, "-m", "cds.cli", *args], capture_output=True, text=True, timeout=180)


def _citalopram_summary(engine, renderer, day):
    from cds.explain import parse_genotype_args

    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2C19=*2/*2"]), ["citalopram"], day=day)
    cards = renderer.order_cards(evaluation, "order-sign")
    return [c.rule_id for c in cards], [c.card["summary"] for c in cards]


def test_a_rule_dated_for_tomorrow_governs_from_tomorrow_in_the_same_engine(knowledge):
    from cds.cards import CardRenderer
    from cds.engine import Engine
    from cds.knowledge.loader import load_knowledge

    (knowledge / "rules/citalopram.yaml").write_text(DATED_RULE)
    engine = Engine.from_knowledge(load_knowledge(knowledge, use_cache=False))
    renderer = CardRenderer(engine.kb, engine)
    rules_today, summaries_today = _citalopram_summary(engine, renderer, date.today())
    assert rules_today == ["default"] and "psychiatry" not in summaries_today[0]
    # one compiled engine, no restart: the day of the call decides which rule governs
    rules_tomorrow, summaries_tomorrow = _citalopram_summary(engine, renderer, TOMORROW)
    assert rules_tomorrow == ["citalopram-from-tomorrow"] and "psychiatry pharmacist" in summaries_tomorrow[0]


def test_cds_test_as_of_runs_the_cases_on_that_day(knowledge):
    (knowledge / "rules/citalopram.yaml").write_text(DATED_RULE)
    today = _cds("test", str(knowledge), "--rule", "citalopram-from-tomorrow", "--as-of", date.today().isoformat())
    assert today.returncode == 1 and "FAIL  citalopram-from-tomorrow" in today.stdout
    later = _cds("test", str(knowledge), "--rule", "citalopram-from-tomorrow", "--as-of", TOMORROW.isoformat())
    assert later.returncode == 0, later.stdout + later.stderr
    assert "PASS  citalopram-from-tomorrow" in later.stdout


def test_a_scheduled_rules_cases_run_as_of_its_first_day(knowledge):
    """Without --as-of, a rule not yet in force is tested as it will be on its first day, so a rule dated
    for next month neither fails today's tests nor holds up today's policy."""
    (knowledge / "rules/citalopram.yaml").write_text(DATED_RULE)
    result = _cds("test", str(knowledge), "--rule", "citalopram-from-tomorrow")
    assert result.returncode == 0, result.stdout
    assert f"PASS  citalopram-from-tomorrow: the local wording, once in force  (as of {TOMORROW})" in result.stdout
    bad = _cds("test", str(knowledge), "--as-of", "tomorrow")
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_suggests_empty_means_no_suggestion(knowledge):
    path = knowledge / "rules/antiplatelets.yaml"
    text = path.read_text()
    # the poor-metabolizer case offers prasugrel and ticagrelor: "no suggestion" must fail it
    path.write_text(text.replace("            suggests: [prasugrel, ticagrelor]\n", "            suggests: []\n", 1))
    result = _cds("test", str(knowledge), "--rule", "clopidogrel-cyp2c19")
    assert result.returncode == 1
    assert "expected no suggestion, offered: prasugrel, ticagrelor" in result.stdout


def test_suggests_empty_passes_where_nothing_is_suggested(kb, engine):
    from cds.cards import CardRenderer
    from cds.knowledge.models import CaseExpectation, RuleTestCase
    from cds.ruletests import run_case

    rule = next(r for r in kb.rules if r.id == "default")
    case = RuleTestCase(name="citalopram: no alternatives on the default rule", genotypes={"CYP2C19": "*2/*2"},
                        drugs=["citalopram"], expect=[CaseExpectation(indicator="critical", suggests=[])])
    assert run_case(engine, CardRenderer(kb, engine), rule, case).passed
