"""A renderer remembers what a card says that rests on the knowledge alone (cds.cards: summaries,
detail parts, dose sentences): every card it renders from remembered parts must equal the card a
renderer that remembers nothing renders for the same patient."""
from __future__ import annotations

from card_walk import all_recommendation_cards
from cds.cards import CardRenderer


class ForgettingRenderer(CardRenderer):
    def order_cards(self, *args, **kwargs):
        self._summaries.clear()
        self._details.clear()
        self._doses.clear()
        return super().order_cards(*args, **kwargs)


def _without_uuids(value):
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


def test_cards_from_remembered_parts_equal_cards_rendered_afresh(engine, renderer, every_card):
    # `renderer` rendered every card of the walk already (and whatever other tests asked of it), so
    # this second walk takes most parts from what it remembers.
    remembered = all_recommendation_cards(engine, renderer)
    fresh = all_recommendation_cards(engine, ForgettingRenderer(engine.kb, engine))
    assert len(remembered) == len(fresh) == len(every_card) > 2000
    assert len(renderer._summaries) > 100 and len(renderer._details) > 100   # it did remember
    for a, b in zip(remembered, fresh):
        assert (a.recommendation.id, a.hook) == (b.recommendation.id, b.hook)
        assert _without_uuids(a.rendered.card) == _without_uuids(b.rendered.card), a.recommendation.id
