"""Walk every recommendation of the shipped guidelines through the engine and the shipped rules (the
default policy and the site rules), on both order hooks, as the patient whose results are exactly that
recommendation's lookup values: the cards the service can produce."""
from __future__ import annotations

from dataclasses import dataclass

from cds.errors import CdsError
from cds.genotype import interpret_value
from cds.knowledge.models import NO_RESULT, SCORE_NA


@dataclass
class WalkedCard:
    recommendation: object        # the Recommendation the patient was built from
    guideline: object
    hook: str
    rendered: object              # cds.cards.RenderedCard


def patient_for(engine, lookup: dict[str, str]):
    """gene → interpretations whose lookup values are `lookup`; None when one cannot be stated."""
    out = {}
    for gene, value in lookup.items():
        if value == NO_RESULT:
            continue
        interpreter = engine.kb.interpreters.get(gene)
        if interpreter is None or value == SCORE_NA:
            return None
        spec = f"score:{value}" if interpreter.kind == "activity-score" else value
        try:
            out.setdefault(gene, []).append(interpret_value(interpreter, spec))
        except CdsError:
            return None
    return out


def all_recommendation_cards(engine, renderer) -> list[WalkedCard]:
    walked = []
    for guideline in engine.kb.guidelines.values():
        for rec in guideline.recommendations:
            patient = patient_for(engine, rec.lookup)
            if patient is None:
                continue
            drug = rec.drug
            if engine.drug_plan(drug) is None:
                continue
            # the population named (as `cds explain --population` does) and not named (as a hook call
            # without it is: one card with every population's statement)
            for population in {rec.population, None}:
                evaluation = engine.evaluate(patient, [drug], population)
                hooks = evaluation.drugs[0].rules
                for hook in ["order-sign"] if "order-sign" in hooks else list(hooks):
                    for card in renderer.order_cards(evaluation, hook, population=population,
                                                     app_url="https://pgx.example.org/smart/launch"):
                        if rec.id in card.recommendation_ids:
                            walked.append(WalkedCard(rec, guideline, hook, card))
    return walked
