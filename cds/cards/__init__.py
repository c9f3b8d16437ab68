"""Cards: CDS Hooks 2.0 cards from an evaluation, decided first as plain data, the words written in
one place.

    model       what a card is made of (Statement, CardPolicy, RenderedCard, OrderRef)
    policy      the local policy (rules/) applied to a recommendation
    statements  which recommendations a card carries and what tells them apart (no text)
    text        every sentence a card says
    actions     suggestions (FHIR MedicationRequest, ServiceRequest), the SMART link, override reasons
    notices     cards about the check itself (conflicts, unreadable results, unidentified orders, …)
    render      CardRenderer: assembles the cards per request
"""
from __future__ import annotations

from .actions import OVERRIDE_REASONS, OVERRIDE_SYSTEM, RXNORM, app_context, replacement_request
from .model import TOPIC_SYSTEM, CardPolicy, Differences, Headline, OrderRef, RenderedCard, Statement
from .policy import default_indicator, is_actionable, most_cautious
from .render import CardRenderer
from .text import (ATTRIBUTION, DETAIL_WORD_BUDGET, GENERIC_ACTIONS, SMART_LINK_LABEL, SUMMARY_LIMIT, attribution,
                   headline_text)

__all__ = [
    "ATTRIBUTION", "DETAIL_WORD_BUDGET", "GENERIC_ACTIONS", "OVERRIDE_REASONS", "OVERRIDE_SYSTEM", "RXNORM",
    "SMART_LINK_LABEL", "SUMMARY_LIMIT", "TOPIC_SYSTEM", "CardPolicy", "CardRenderer", "Differences", "Headline",
    "OrderRef", "RenderedCard", "Statement", "app_context", "attribution", "default_indicator", "headline_text",
    "is_actionable", "most_cautious", "replacement_request",
]
