"""A dose card: a DoseDecision (plain data) in, a CDS Hooks card out. Its words are in cds/cards/text.py
(the dose-card section), where every phrase of every card is written."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cds.cards.model import TOPIC_SYSTEM, RenderedCard
from cds.cards.text import dose_detail, dose_summary
from cds.dosing.calculate import DoseDecision
from cds.ids import new_uuid
from cds.sources import ATTRIBUTION

if TYPE_CHECKING:
    from cds.knowledge.loader import KnowledgeBase
    from cds.knowledge.models import Rule


def dose_card(kb: KnowledgeBase, decision: DoseDecision, rule: Rule | None) -> RenderedCard:
    a = decision.algorithm
    guideline = kb.guidelines.get(a.guideline)
    warn = decision.weekly_mg is None or any(s.action == "caution" for s in decision.steps)
    card: dict[str, Any] = {
        "uuid": new_uuid(),
        "summary": " ".join(dose_summary(decision).split()),
        "detail": f"{dose_detail(decision, kb, rule.id if rule else None)}\n\nKnowledge base version `{kb.version}`.",
        "indicator": "warning" if warn else "info",
        "source": {"label": f"{ATTRIBUTION['CPIC']}; {a.citation.text()}",
                   "url": guideline.url if guideline else None,
                   "topic": {"system": TOPIC_SYSTEM, "code": rule.id if rule else "dosing", "display": a.name}},
        "links": [{"label": "CPIC warfarin guideline", "url": guideline.url, "type": "absolute"}] if guideline else [],
    }
    if card["source"]["url"] is None:
        del card["source"]["url"]
    # what the card rests on, in the shape of every card's facts (audit, screening): the genotypes it read
    facts = [{"gene": i.name, "phenotype": str(i.value) if i.value is not None else "missing",
              "lookup_key": str(i.value) if i.value is not None else None,
              "source_ids": [s.strip() for s in (i.source or "").split(",") if s.strip()]}
             for i in decision.inputs if i.name in kb.genes]
    return RenderedCard(card, rule.id if rule else "dosing", a.drug, [a.guideline],
                        [guideline.version] if guideline else [], [a.id], facts, sources=["CPIC"])
