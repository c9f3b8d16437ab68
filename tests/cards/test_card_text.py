"""What a CommonMark client shows of every card the shipped knowledge and default rules can produce:
CPIC's text survives literally (allele names, numbers, sentences), summaries are never cut and say
drug, result and action, and the detail's common case is short."""
from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

from markdown_it import MarkdownIt

from cds.cards import DETAIL_WORD_BUDGET, GENERIC_ACTIONS, SUMMARY_LIMIT, headline_text

# The worst client: raw HTML on (the CDS Hooks sandbox renders request data as real elements).
COMMONMARK = MarkdownIt("commonmark", {"html": True})
ALLELE = re.compile(r"[A-Z0-9-]*\*\d+[A-Z]?(?::\d+)*")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.parts.append(data)


def shown(markdown: str) -> tuple[str, list[str]]:
    """The text a reader sees and the HTML elements the renderer made."""
    parser = _Text()
    parser.feed(COMMONMARK.render(markdown))
    return " ".join(" ".join(parser.parts).split()), parser.tags


def folded(text: str) -> str:
    return " ".join(text.split())


def test_the_walk_covers_the_knowledge(every_card):
    guidelines = {w.guideline.id for w in every_card}
    assert len(every_card) > 800 and len(guidelines) >= 45, (len(every_card), len(guidelines))


def test_cpic_text_survives_literally(every_card):
    broken = []
    for w in every_card:
        text, _ = shown(w.rendered.card["detail"])
        source = folded(w.recommendation.recommendation)
        if source not in text:
            broken.append((w.recommendation.id, source[:80]))
            continue
        alleles = Counter(ALLELE.findall(source))
        if any(Counter(ALLELE.findall(text))[a] < n for a, n in alleles.items()):
            broken.append((w.recommendation.id, "allele names"))
        numbers = Counter(NUMBER.findall(source))
        if any(Counter(NUMBER.findall(text))[x] < n for x, n in numbers.items()):
            broken.append((w.recommendation.id, "numbers"))
    assert not broken, broken[:10]


def test_starred_alleles_are_not_emphasis(every_card):
    starred = [w for w in every_card if "*" in w.recommendation.recommendation]
    assert len(starred) >= 30
    for w in starred:
        html = COMMONMARK.render(w.rendered.card["detail"])
        text, _ = shown(w.rendered.card["detail"])
        for allele in ALLELE.findall(w.recommendation.recommendation):
            assert allele in text, (w.recommendation.id, allele)
        # CPIC's stars never become emphasis: no <em> holds a piece of CPIC's text
        for em in re.findall(r"<em>(.*?)</em>", html):
            assert em not in w.recommendation.recommendation, (w.recommendation.id, em)


def test_summaries_fit_and_say_drug_result_and_action(every_card):
    for w in every_card:
        card = w.rendered.card
        summary = card["summary"]
        assert len(summary) <= SUMMARY_LIMIT, summary
        assert not summary.endswith("…") and "…" not in summary, summary
        drug = w.rendered.drug
        assert summary.lower().startswith(drug.lower() + ":"), summary
        headline = w.rendered.headline
        assert summary == headline_text(headline)
        if headline.template is not None:    # the site's wording: what it says is the rule's
            head, sep, action = summary.partition(" — ")
            assert sep and action and _from_rule_template(summary, w), summary
        else:
            head, action = "; ".join(headline.results), headline.action
            assert action and not headline.cut, summary
            texts = [folded(s.recommendation.recommendation) for s in w.rendered.statements]
            assert any(action in t for t in texts) or action in GENERIC_ACTIONS, summary
        assert any(f["phenotype"] in head for f in w.rendered.facts if f["phenotype"] != "No Result") \
            or all(f["phenotype"] == "No Result" for f in w.rendered.facts), summary


def _from_rule_template(summary: str, walked) -> bool:
    from pgx_paths import REPO
    import yaml

    for path in (REPO / "rules").glob("*.yaml"):
        for rule in yaml.safe_load(path.read_text())["rules"]:
            if rule["id"] != walked.rendered.rule_id:
                continue
            templates = [rule.get("summary")] + [a.get("summary") for a in rule.get("adjustments", [])]
            for t in filter(None, templates):
                tail = t.split("—", 1)[-1].strip()
                if tail and tail in summary:
                    return True
    return False


def _generic(headline) -> bool:
    """The summary's action is the curators' flags' phrase alone (no CPIC words, no difference named)."""
    return headline.template is None and headline.action in GENERIC_ACTIONS and headline.differs is None \
        and headline.whose is None


def test_summaries_vary_with_the_advice(every_card):
    generic = [w for w in every_card if _generic(w.rendered.headline)]
    # CPIC's own words where they fit; the flag-derived phrase only for the rest
    assert len(generic) < len(every_card) * 0.6, (len(generic), len(every_card))


def test_detail_is_short_in_the_common_case(every_card):
    words = sorted(len(shown(w.rendered.card["detail"])[0].split()) for w in every_card)
    median = words[len(words) // 2]
    assert median < DETAIL_WORD_BUDGET, median


def test_detail_names_evidence(every_card):
    for w in every_card[:200]:
        text, _ = shown(w.rendered.card["detail"])
        assert w.guideline.name in text
        assert w.rendered.card["detail"].count(w.rendered.rule_id) >= 1
        rec = w.recommendation
        assert (rec.classification or "no classification") in text


def test_smart_link_on_every_card(every_card):
    for w in every_card[:50]:
        links = [l for l in w.rendered.card["links"] if l["type"] == "smart"]
        assert len(links) == 1 and links[0]["label"] == "Open pharmacogenomic summary"
        assert isinstance(links[0]["appContext"], str)


def test_stats(every_card, capsys):
    words = sorted(len(shown(w.rendered.card["detail"])[0].split()) for w in every_card)
    generic = sum(1 for w in every_card if _generic(w.rendered.headline))
    grouped = sum(1 for w in every_card if len(w.rendered.statements) > 1)
    with capsys.disabled():
        print(f"\ncards {len(every_card)}, grouped {grouped}, generic summaries {generic}, detail words median {words[len(words)//2]}, "
              f"p90 {words[int(len(words)*0.9)]}, max {words[-1]}, under {DETAIL_WORD_BUDGET}: {sum(1 for x in words if x < DETAIL_WORD_BUDGET)}")
