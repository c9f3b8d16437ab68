"""Cards: CDS Hooks 2.0 cards from an evaluation, decided first as plain data, the words written in
one place.

    model       what a card is made of, as data (Statement, Differences, Headline, the notices, RenderedCard)
    policy      the local policy (rules/) applied to a recommendation
    statements  which recommendations a card carries and what tells them apart, the patient-view's
                results and drugs (no text)
    notices     which cards about the check itself to give (conflicts, unreadable results, unidentified
                orders, results not retrieved, unreachable keys)
    text        every sentence a card says
    actions     suggestions (FHIR MedicationRequest, ServiceRequest), links, override reasons
    render      CardRenderer: assembles the cards per request
"""
from __future__ import annotations

from cds.override_reasons import OVERRIDE_REASONS

from .actions import OVERRIDE_SYSTEM, RXNORM, app_context, replacement_request
from .model import (
    TOPIC_SYSTEM,
    CardPolicy,
    Conflict,
    Differences,
    Headline,
    Notice,
    NotRetrieved,
    OrderRef,
    RenderedCard,
    Statement,
    Unidentified,
    Uninterpretable,
    UnreachableKeys,
)
from .policy import default_indicator, is_actionable, most_cautious
from .render import CardRenderer
from .text import (
    ATTRIBUTION,
    DETAIL_WORD_BUDGET,
    GENERIC_ACTIONS,
    SMART_LINK_LABEL,
    SUMMARY_LIMIT,
    attribution,
    headline_text,
)

__all__ = [
    "ATTRIBUTION", "DETAIL_WORD_BUDGET", "GENERIC_ACTIONS", "OVERRIDE_REASONS", "OVERRIDE_SYSTEM", "RXNORM",
    "SMART_LINK_LABEL", "SUMMARY_LIMIT", "TOPIC_SYSTEM", "CardPolicy", "CardRenderer", "Conflict", "Differences",
    "Headline", "NotRetrieved", "Notice", "OrderRef", "RenderedCard", "Statement", "Unidentified", "Uninterpretable",
    "UnreachableKeys", "app_context", "attribution", "default_indicator", "headline_text", "is_actionable",
    "most_cautious", "replacement_request",
]
