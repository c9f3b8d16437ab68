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
