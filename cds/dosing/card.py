"""The words of a dose card, in one place: a DoseDecision (plain data) in, a CDS Hooks card out.

With an estimate: the weekly and daily dose, every input used with its date and resource, the flow chart's
statements that apply (e.g. "consider an alternative agent"), the guideline's caveats and the citations.
Without one: every missing input named ("no body weight on file in the last 12 months") and the flow chart's
text instead of a number.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cds.dosing.calculate import DoseDecision, InputValue
from cds.ids import new_uuid
from cds.mdescape import md_data, md_text
from cds.sources import ATTRIBUTION

if TYPE_CHECKING:
    from cds.cards import RenderedCard
    from cds.knowledge.loader import KnowledgeBase
    from cds.knowledge.models import Rule

SUMMARY_LIMIT = 139                     # CDS Hooks: "<140-character summary" (as cds/cards.py)
TOPIC_SYSTEM = "urn:pgx-cds:rule"
INPUT_WORDS = {"age_decades": "Age", "height_cm": "Height", "weight_kg": "Weight", "race": "Race group (IWPC)",
               "VKORC1": "VKORC1", "CYP2C9": "CYP2C9", "amiodarone": "Amiodarone",
               "enzyme_inducer": "Enzyme inducers (carbamazepine, phenytoin, rifampin)"}


def weekly_text(mg: float) -> str:
    return f"{mg:.1f} mg/week"


def daily_text(mg: float) -> str:
    return f"{mg / 7:.1f} mg/day"


def summary(decision: DoseDecision) -> str:
    drug = decision.algorithm.drug.capitalize()
    genotype = ", ".join(f"{i.name} {i.value}" for i in decision.inputs
                         if i.name in ("CYP2C9", "VKORC1") and i.value is not None)
    cautions = [s for s in decision.steps if s.action == "caution"]
    if decision.weekly_mg is None:
        missing = [INPUT_WORDS.get(i.name, i.name).lower() for i in decision.missing]
        if missing:
            text = f"{drug}: no genotype-guided dose — missing {', '.join(dict.fromkeys(missing))}; see CPIC flow chart"
        else:
            text = f"{drug}: dose by CPIC's flow chart, no genotype-guided estimate here — see detail"
        return _fit(text, f"{drug}: no genotype-guided dose — see detail")
    dose = _dose_words(decision)
    text = f"{drug}: IWPC estimate {dose} ({genotype})"
    if any(s.id.startswith("cyp2c9-poor") for s in cautions):
        text += " — consider an alternative agent"
    return _fit(text, f"{drug}: IWPC estimate {dose} — see detail")


def _dose_words(decision: DoseDecision) -> str:
    weekly = decision.weekly_mg or 0.0
    if decision.weekly_range_mg:
        low, high = decision.weekly_range_mg
        return f"{low:.1f}–{high:.1f} mg/week"
    return f"{weekly_text(weekly)} ({daily_text(weekly)})"


def _fit(text: str, shorter: str) -> str:
    return text if len(text) <= SUMMARY_LIMIT else shorter[:SUMMARY_LIMIT]


def detail(decision: DoseDecision, kb: "KnowledgeBase", rule_id: str | None) -> str:
    a = decision.algorithm
    guideline = kb.guidelines.get(a.guideline)
    lines = []
    if decision.weekly_mg is not None:
        lines.append(f"**Estimated stable maintenance dose ({md_text(a.name)}): {_dose_words(decision)}**")
        if decision.weekly_range_mg:
            lines.append(f"Before the flow chart's adjustment: {weekly_text(decision.weekly_mg)}.")
    else:
        lines.append(f"**{md_text(a.unavailable_text)}**")
        lines.append("Why:\n\n" + "\n".join(f"- {md_data(w)}" for w in decision.withheld))
    lines.append("**Inputs**\n\n" + "\n".join(_input_line(i) for i in decision.inputs))
    statements = [s for s in decision.steps if s.action != "dose-clinically"]
    if statements:
        lines.append("**CPIC flow chart**\n\n" + "\n".join(
            f"- {md_text(s.text)}" + (f" ({md_text(s.classification)})" if s.classification else "")
            + f" — {md_text(s.source)}" for s in statements))
    lines.append("**Caveats**\n\n" + "\n".join(f"- {md_text(c)}" for c in a.caveats))
    lines.append(_sources(decision, guideline.reference() if guideline else None, rule_id))
    return "\n\n".join(lines)


def _input_line(i: InputValue) -> str:
    what = INPUT_WORDS.get(i.name, i.name)
    if i.value is None:
        return f"- {what}: **missing** — {md_data(i.missing or i.shown)}"
    where = f" — {md_data(i.source)}" if i.source else ""
    return f"- {what}: {md_data(i.shown)}{where}"


def _sources(decision: DoseDecision, guideline_ref: str | None, rule_id: str | None) -> str:
    a = decision.algorithm
    checks = "; ".join(f"{md_text(c.name)} (commit {c.commit[:7]})" for c in a.cross_checks)
    parts = [f"Algorithm: {md_text(a.citation.text())}; coefficients checked against {checks}.",
             f"Flow chart: {md_text(a.flow_source)}."]
    if guideline_ref:
        parts.append(f"Guideline: {md_text(guideline_ref)}.")
    parts.append(f"Dosing file `{a.id}`" + (f", rule `{md_text(rule_id)}`" if rule_id else "") + ".")
    return " ".join(parts)


def dose_card(kb: "KnowledgeBase", decision: DoseDecision, rule: "Rule | None") -> "RenderedCard":
    from cds.cards import RenderedCard

    a = decision.algorithm
    guideline = kb.guidelines.get(a.guideline)
    warn = decision.weekly_mg is None or any(s.action == "caution" for s in decision.steps)
    card = {
        "uuid": new_uuid(),
        "summary": " ".join(summary(decision).split()),
        "detail": f"{detail(decision, kb, rule.id if rule else None)}\n\nKnowledge base version `{kb.version}`.",
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
    return RenderedCard(card, rule.id if rule else "dosing", a.drug, a.guideline,
                        guideline.version if guideline else None, a.id, facts, sources=["CPIC"])
