"""No request-supplied string produces an HTML element in any card, rendered by CommonMark with raw
HTML on (as the CDS Hooks sandbox renders): ids, laboratory names, conflicting results' ids."""
from __future__ import annotations

import re

from markdown_it import MarkdownIt

from cards_fhir import genotype, order, order_sign

RAW_HTML_ON = MarkdownIt("commonmark", {"html": True})
HOSTILE = ['<img src=x onerror="alert(1)">', '<a href="javascript:alert(2)">click</a>', "**bold** _x_ `y`",
           "[link](https://evil.example/)", "https://evil.example/auto", "&lt;b&gt;", "<script>alert(3)</script>"]


def elements(markdown: str) -> list[str]:
    return re.findall(r"<([a-z]+)[\s>]", RAW_HTML_ON.render(markdown))


def test_hostile_ids_and_lab_names_stay_text(service):
    def cards_for(oid: str, lab: str) -> list[dict]:
        body = order_sign(order("clopidogrel"), genomics=[genotype("CYP2C19", "*2/*2", oid=oid, lab=lab)])
        return service.call("pgx-order-sign", body).json()["cards"]

    (benign,) = cards_for("x0", "Example Laboratory")
    baseline = sorted(elements(benign["detail"]))
    for i, hostile in enumerate(HOSTILE):
        (card,) = cards_for(f"x{i}{hostile}", hostile)
        html = RAW_HTML_ON.render(card["detail"])
        # exactly the elements our own Markdown makes, whatever the request's strings hold
        assert sorted(elements(card["detail"])) == baseline, (hostile, html)
        assert "evil.example" not in "".join(re.findall(r'href="([^"]+)"', html))
        shown = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
        assert hostile in shown, (hostile, shown)
        assert card["summary"] == benign["summary"]


def test_conflicting_results_with_hostile_ids(service):
    a = genotype("CYP2C19", "*2/*2", oid='a<img src=x onerror="alert(1)">')
    b = genotype("CYP2C19", "*1/*1", oid="b<script>alert(2)</script>")
    cards = service.call("pgx-order-sign", order_sign(order("clopidogrel"), genomics=[a, b])).json()["cards"]
    assert cards and "conflicting" in cards[0]["summary"]
    for card in cards:
        assert not {"img", "script"} & set(elements(card["detail"]))
        assert "&lt;img src=x" in RAW_HTML_ON.render(card["detail"])


def test_an_unidentified_orders_hostile_text_and_codes_stay_text(service):
    """The order-not-identified notice quotes what was ordered (its text and codes) from the request."""
    def notice_for(text: str) -> dict:
        ambiguous = order("clopidogrel", mid="mr-ambiguous")
        concept = ambiguous["medicationCodeableConcept"]
        concept["coding"].append({"system": concept["coding"][0]["system"], "code": "36567", "display": "simvastatin"})
        concept["coding"].append({"system": "urn:oid:1.2.3", "code": text})
        concept["text"] = text
        cards = service.call("pgx-order-sign", order_sign(ambiguous, genomics=[genotype("CYP2C19", "*2/*2")])).json()
        (card,) = [c for c in cards["cards"] if c["source"].get("topic", {}).get("code") == "order-not-identified"]
        return card

    baseline = sorted(elements(notice_for("clopidogrel or simvastatin")["detail"]))
    for hostile in HOSTILE:
        card = notice_for(hostile)
        html = RAW_HTML_ON.render(card["detail"])
        assert sorted(elements(card["detail"])) == baseline, (hostile, html)
        assert "evil.example" not in "".join(re.findall(r'href="([^"]+)"', html))
