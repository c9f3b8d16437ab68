"""Which guideline sources (CPIC, DPWG) a site's policy selects, and how two sources' advice compares.

Selection lives in the rules policy (rules/*.yaml), so pharmacists own it and `cds test` covers it: a
rule's `sources` chooses CPIC, DPWG or both for the drugs it governs; a rule that sets none inherits the
`sources` of the drugs: '*' rule (the site default), and that defaults to CPIC — the behaviour before
DPWG was encoded.

Two sources disagree *in kind* when the PharmGKB curators' flags put their advice in different kinds:
choose an alternative drug (alternateDrugAvailable) beats adjust the dose (dosingInformation) beats
other prescribing guidance beats no change. The kind is read from the flags, never from the prose.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cds.knowledge.models import Recommendation, Rule

if TYPE_CHECKING:
    from cds.engine import Match
    from cds.knowledge.loader import KnowledgeBase

DEFAULT_SOURCES: tuple[str, ...] = ("CPIC",)
SOURCE_ORDER = {"CPIC": 0, "DPWG": 1}
INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
# kind → (rank, how a card names it)
KINDS = {
    "alternative": (3, "choose an alternative drug"),
    "dose": (2, "adjust the dose"),
    "other": (1, "other prescribing guidance"),
    "none": (0, "no change"),
}
ATTRIBUTION = {
    "CPIC": "CPIC guidelines (cpicpgx.org, CC0)",
    "DPWG": "DPWG guidelines (Dutch Pharmacogenetics Working Group) as annotated by PharmGKB/ClinPGx",
}


def site_default(kb: KnowledgeBase) -> tuple[str, ...]:
    wildcard = next((r for r in kb.rules if r.drugs == "*"), None)
    return tuple(wildcard.sources) if wildcard and wildcard.sources else DEFAULT_SOURCES


def _display_order(source: str) -> int:
    return SOURCE_ORDER.get(source, len(SOURCE_ORDER))


def rule_sources(kb: KnowledgeBase, rule: Rule | None) -> tuple[str, ...]:
    """The guideline sources whose recommendations may raise this rule's cards, in display order."""
    chosen = tuple(rule.sources) if rule is not None and rule.sources else site_default(kb)
    return tuple(sorted(set(chosen), key=_display_order))


def policy_sources(kb: KnowledgeBase) -> tuple[str, ...]:
    """Every source some rule of the policy selects (the engine evaluates these unless told otherwise)."""
    chosen = set(site_default(kb))
    for rule in kb.rules:
        chosen |= set(rule_sources(kb, rule))
    return tuple(sorted(chosen, key=_display_order))


def parse_source_option(value: str) -> tuple[str, ...]:
    """`--source cpic|dpwg|all` (also 'cpic,dpwg') → source names."""
    value = value.strip().lower()
    if value == "all":
        return tuple(SOURCE_ORDER)
    given = {v.strip().upper() for v in value.split(",") if v.strip()}
    names = tuple(sorted(given, key=lambda s: SOURCE_ORDER.get(s, 9)))
    unknown = [n for n in names if n not in SOURCE_ORDER]
    if unknown or not names:
        from cds.errors import CdsError
        raise CdsError(f"--source '{value}': expected cpic, dpwg or all")
    return names


def of_sources(matches: Iterable[Match], sources: Iterable[str]) -> list[Match]:
    wanted = set(sources)
    return [m for m in matches if m.guideline.source in wanted]


def kind(rec: Recommendation, actionable: bool = True) -> str:
    """The kind of advice, from the curators' flags (no flags: 'other' — we would rather show than hide)."""
    if not actionable:
        return "none"
    flags = rec.flags
    if flags is None:
        return "other"
    if flags.alternate_drug_available:
        return "alternative"
    if flags.dosing_information:
        return "dose"
    if flags.other_prescribing_guidance:
        return "other"
    return "none"


def kind_phrase(name: str) -> str:
    return KINDS[name][1]


def more_cautious(a: str, b: str) -> str:
    """The more cautious of two card indicators."""
    return a if INDICATOR_RANK[a] >= INDICATOR_RANK[b] else b


def disagreement(kinds_by_source: dict[str, str]) -> str | None:
    """'CPIC: choose an alternative drug; DPWG: adjust the dose' when the sources' kinds differ, else None."""
    if len(set(kinds_by_source.values())) < 2:
        return None
    ordered = sorted(kinds_by_source.items(), key=lambda kv: SOURCE_ORDER.get(kv[0], 9))
    return "; ".join(f"{source}: {kind_phrase(k)}" for source, k in ordered)


def is_dpwg(rec: Recommendation) -> bool:
    """DPWG recommendations grade nothing in CPIC's terms: their `source` names the DPWG export."""
    from cds.knowledge.dpwg_keys import SOURCE_PREFIX

    return rec.source.startswith(SOURCE_PREFIX)
