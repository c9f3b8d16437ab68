"""Fixtures of the card tests: every card the shipped knowledge and rules can produce."""
from __future__ import annotations

import pytest

from card_walk import all_recommendation_cards


@pytest.fixture(scope="session")
def renderer(engine):
    from cds.cards import CardRenderer

    return CardRenderer(engine.kb, engine)


@pytest.fixture(scope="session")
def every_card(engine, renderer):
    return all_recommendation_cards(engine, renderer)


@pytest.fixture(scope="session")
def service():
    """The service (create_app as gunicorn builds it) on loopback, development mode, no audit store."""
    from cds.service.app import create_app
    from cds.service.config import Settings
    from live_service import LiveServer

    live = LiveServer(create_app(Settings(auth_mode="off", audit=False)))
    yield live
    live.stop()


@pytest.fixture()
def smart_ehr():
    from smart_ehr import SmartEhr

    ehr = SmartEhr()
    yield ehr
    ehr.stop()


@pytest.fixture(scope="session")
def browser():
    from browser_paths import chromium_driver

    yield from chromium_driver()
