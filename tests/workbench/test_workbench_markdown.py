"""The workbench's card-detail renderer is markdown-it-py (CommonMark) with raw HTML off: what it
renders, and that nothing else becomes markup."""
from __future__ import annotations

from cds.workbench.markdown import inline, render


def test_a_real_card_detail(engine):
    from cds.cards import CardRenderer
    from cds.explain import parse_genotype_args

    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2C19=*2/*2"]), ["clopidogrel"])
    (card,) = CardRenderer(engine.kb).order_cards(evaluation, "order-sign", app_url="https://x.example/smart/launch")
    html = str(render(card.card["detail"]))
    assert "<li><strong>CYP2C19</strong> *2/*2 — <strong>Poor Metabolizer</strong></li>" in html
    assert "<strong>CPIC advice</strong>" in html
    assert "<em>Open pharmacogenomic summary</em>" in html
    assert "**" not in html and "\\*" not in html


def test_raw_html_is_text_and_bad_links_are_refused():
    html = str(render("<script>alert(1)</script> **<b>bold</b>** [x](javascript:alert(1)) `<i>`"))
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<strong>&lt;b&gt;bold&lt;/b&gt;</strong>" in html
    assert "href" not in html                                   # markdown-it refuses javascript: links
    assert "<code>&lt;i&gt;</code>" in html


def test_links_open_in_a_new_tab_without_the_opener():
    html = inline("[CPIC](https://cpicpgx.org/)")
    assert html == '<a href="https://cpicpgx.org/" target="_blank" rel="noopener noreferrer">CPIC</a>'


def test_link_url_cannot_break_out_of_its_attribute():
    html = inline('[x](<https://example.org/"onmouseover="alert(1)>)')
    assert 'onmouseover="' not in html and "%22" in html


def test_escaped_stars_stay_stars_and_commonmark_emphasis_is_emphasis():
    assert inline("HLA-B\\*15:02 and HLA-B\\*15:08") == "HLA-B*15:02 and HLA-B*15:08"
    # unescaped, CommonMark makes this italics: exactly why cds.cards escapes CPIC's text
    assert inline("HLA-B*15:02 and HLA-B*15:08") == "HLA-B<em>15:02 and HLA-B</em>15:08"


def test_blocks():
    html = str(render("Intro line\nsecond line\n\n- one\n  - nested\n- two\n\nAfter"))
    assert html == ("<p>Intro line\nsecond line</p>\n"
                    "<ul>\n<li>one\n<ul>\n<li>nested</li>\n</ul>\n</li>\n<li>two</li>\n</ul>\n"
                    "<p>After</p>")
    assert str(render(None)) == "" and str(render("")) == ""
