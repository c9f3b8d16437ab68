"""A summary template naming a placeholder the card renderer does not fill would fail at the first card
of that rule; `cds validate` names it, with file and line, before it goes live."""
from __future__ import annotations

import pytest

from test_validate import _line_of, _replace, knowledge, run_validate  # noqa: F401  (fixture)

CASES = [
    ("rules/antiplatelets.yaml", "summary: '{Drug}: {results} — avoid; use prasugrel",
     "summary: '{Drug}: {genotype} — avoid; use prasugrel", "unknown placeholder(s) {genotype}"),
    ("rules/pretest.yaml", "summary: '{Drug}: no HLA-B*57:01 result on file",
     "summary: '{Drug}: no {allele} result on file", "unknown placeholder(s) {allele}"),
    ("rules/antiplatelets.yaml", "summary: '{Drug}: {results} — avoid; use prasugrel",
     "summary: '{Drug: {results} — avoid; use prasugrel", "summary template is malformed"),
]


@pytest.mark.parametrize("relative, old, new, fault", CASES, ids=["summary", "pretest summary", "malformed"])
def test_a_summary_with_an_unknown_placeholder_is_refused(knowledge, relative, old, new, fault):
    path = knowledge / relative
    _replace(path, old, new)
    result = run_validate(knowledge)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    where = f"{relative}:{_line_of(path, new)}:"
    assert any(where in line and fault in line for line in result.stderr.splitlines()), result.stderr


def test_a_summary_that_would_not_fit_a_card_is_refused_with_the_longest_example(knowledge):
    """A pharmacist's longer wording passed `cds validate` and `cds test` and was then silently replaced
    by the default wording on every card: it is refused, naming the recommendation whose card it
    would overflow and the text it would give."""
    path = knowledge / "rules/antiplatelets.yaml"
    old = "summary: '{Drug}: {results} — avoid; use prasugrel or ticagrelor if no contraindication'"
    new = ("summary: '{Drug}: {results} — avoid; use prasugrel or ticagrelor if no contraindication; "
           "page the cardiology pharmacist on 4411'")
    _replace(path, old, new)
    result = run_validate(knowledge)
    assert result.returncode == 1
    where = f"rules/antiplatelets.yaml:{_line_of(path, new)}:"
    fault = next(line for line in result.stderr.splitlines() if where in line)
    assert "at most 139" in fault and "cpic-" in fault and "page the cardiology pharmacist" in fault
    # the longest filling is the example: "Likely Poor Metabolizer" is longer than "Poor Metabolizer"
    assert "CYP2C19 Likely Poor Metabolizer" in fault


def test_a_pretest_summary_that_would_not_fit_is_refused(knowledge):
    path = knowledge / "rules/pretest.yaml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if line.strip().startswith("summary: '{Drug}: no HLA-B*57:01"))
    new = old.rstrip("'") + " — and the rest of a very long sentence that nobody would read on a small card'"
    _replace(path, old, new)
    result = run_validate(knowledge)
    assert result.returncode == 1
    assert f"rules/pretest.yaml:{_line_of(path, new)}:" in result.stderr and "at most 139" in result.stderr


def test_the_shipped_summaries_fit():
    from cds.knowledge.crosslink import _overlong_summaries
    from cds.knowledge.loader import load_knowledge
    from pgx_paths import REPO

    kb = load_knowledge(REPO)
    assert [d for rule in kb.rules for d in _overlong_summaries(kb, rule)] == []
