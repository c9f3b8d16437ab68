"""Golden cards: representative CDS Hooks requests (cds/workbench/examples/golden/*.json, and the
workbench's shipped example) answered by the service over HTTP must give exactly the cards checked in
beside them (*.cards.json), uuids aside. They are regression fixtures, not clinical truth: the clinical
tests compare cards with ../shared/cpic. After an intended change to what cards say, regenerate them
and review the diff (cds/workbench/examples/golden/README.md):

    CDS_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/cards/test_golden_cards.py
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

from pgx_paths import REPO

EXAMPLES = REPO / "cds" / "workbench" / "examples"
GOLDEN = EXAMPLES / "golden"
SERVICES = {"order-select": "pgx-order-select", "order-sign": "pgx-order-sign", "patient-view": "pgx-patient-view"}
# every kind of notice card the default rules can give (cds/cards/notices.py); a DPWG key notice needs a
# site policy with DPWG (tests/http/test_dpwg_service.py)
NOTICE_CODES = {"conflicting-results", "result-not-interpretable", "order-not-identified", "check-incomplete"}


def _requests() -> dict[str, Path]:
    found = {p.name.removesuffix(".json"): p for p in sorted(GOLDEN.glob("*.json")) if not p.name.endswith(".cards.json")}
    shipped = EXAMPLES / "order-select-clopidogrel-cyp2c19.json"
    return {shipped.name.removesuffix(".json"): shipped, **found}


REQUESTS = _requests()


def _normalised(value, replacements: dict[str, str]):
    """The cards with what changes from run to run (uuids, the service's address) and with every change
    of knowledge (its version, a digest of every knowledge file) replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: "<uuid>" if k == "uuid" else _normalised(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v, replacements) for v in value]
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
    return value


def _text(cards) -> str:
    return json.dumps(cards, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_cards_equal_the_golden_cards(name, service, kb):
    body = json.loads(REQUESTS[name].read_text(encoding="utf-8"))
    response = service.call(SERVICES[body["hook"]], body)
    assert response.status_code == 200, response.text
    cards = _normalised(response.json()["cards"], {kb.version: "<kb-version>", service.url: "<service-url>"})
    golden = GOLDEN / f"{name}.cards.json"
    if os.environ.get("CDS_REGENERATE_GOLDEN"):
        golden.write_text(_text(cards), encoding="utf-8")
        pytest.skip(f"regenerated {golden.relative_to(REPO)}: review the diff")
    assert golden.exists(), f"no golden cards for {name}: run with CDS_REGENERATE_GOLDEN=1 and review them"
    expected = golden.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), _text(cards).splitlines(True),
                                        f"{name}.cards.json", "this run"))
    assert not diff, f"cards differ from the golden cards (if intended, regenerate: see this module):\n{diff}"


def test_every_golden_file_has_its_request_and_every_notice_kind_is_covered():
    orphans = [p.name for p in GOLDEN.glob("*.cards.json") if p.name.removesuffix(".cards.json") not in REQUESTS]
    assert not orphans, orphans
    codes = {card["source"]["topic"]["code"] for p in GOLDEN.glob("*.cards.json")
             for card in json.loads(p.read_text(encoding="utf-8")) if card["source"].get("topic")}
    assert NOTICE_CODES <= codes, NOTICE_CODES - codes
    assert {"patient-summary", "clopidogrel-cyp2c19", "abacavir-hla-b"} <= codes, codes
    hooks = {json.loads(p.read_text(encoding="utf-8"))["hook"] for p in REQUESTS.values()}
    assert hooks == set(SERVICES), hooks
