"""`cds serve` with the decision fixed: every hook call gets the Advice of the first call, each card
with a uuid of its own as the audit needs. A load run then measures everything an order-select costs
except the decision core (`cds.decision.decide`: reading the results and orders, the rules, the
cards): HTTP, parsing the request and its prefetch, serialising the answer, metrics and, unless
CDS_AUDIT=false, the audit. A bound for bench/load_service.py --fixed-decision, never a way to run
the service: the answer is the first patient's.

    python bench/serve_fixed_decision.py serve --port 8080 --workers 2
"""
from __future__ import annotations

import dataclasses
import sys

import cds.service.app as app_module
from cds.cli import main
from cds.ids import new_uuid

_decide = app_module.decide
_first = []


def _fixed(advisor, case, require_consent=False):
    if not _first:
        _first.append(_decide(advisor, case, require_consent))
    advice = _first[0]
    cards = [dataclasses.replace(c, card={**c.card, "uuid": new_uuid()}) for c in advice.cards]
    return dataclasses.replace(advice, cards=cards)


app_module.decide = _fixed

if __name__ == "__main__":
    sys.exit(main())
