"""The card-detail Markdown renderer: what it renders, and that nothing else becomes markup."""
from __future__ import annotations

from cds.workbench.markdown import inline, render


def test_a_real_card_detail(engine):
    from cds.cards import CardRenderer
    from cds.explain import parse_genotype_args

    evaluation = engine.evaluate(parse_genotype_args(engine, ["CYP2C19=*2/*2"]), ["clopidogrel"])
    (card,) = CardRenderer(engine.kb).order_cards(evaluation, "order-sign")
    html = str(render(card.card["detail"]))
    assert "<p><strong>Pharmacogenomic result</strong></p>" in html
    assert "<li>CYP2C19 <code>*2/*2</code> — <strong>Poor Metabolizer</strong></li>" in html
    assert "<em>Other considerations:</em>" in html
    assert ('<a href="https://cpicpgx.org/guidelines/guideline-for-clopidogrel-and-cyp2c19/" target="_blank" '
            'rel="noopener noreferrer">CPIC Guideline for clopidogrel and CYP2C19</a>') in html
    assert "**" not in html and "`" not in html


def test_everything_is_escaped():
    html = str(render("<script>alert(1)</script> **<b>bold</b>** [x](javascript:alert(1)) `<i>`"))
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<strong>&lt;b&gt;bold&lt;/b&gt;</strong>" in html
    assert "href" not in html                                   # only http(s) links become anchors
    assert "<code>&lt;i&gt;</code>" in html


def test_link_url_cannot_break_out_of_its_attribute():
    html = inline('[x](https://example.org/"onmouseover="alert(1))')
    assert 'onmouseover="' not in html and "&#34;" in html


def test_stars_inside_words_are_not_emphasis():
    text = "HLA-B*15:02 positive and HLA-A*31:01; CYP2D6*4 alleles"
    assert inline(text) == text
    assert inline("a *real* and _also_ emphasis") == "a <em>real</em> and <em>also</em> emphasis"
    assert inline("snake_case_name stays") == "snake_case_name stays"


def test_bold_allele_result():
    # cards.py writes "— ***31:01 negative**" for HLA results: bold around a starred allele
    assert inline("HLA-A — ***31:01 negative**") == "HLA-A — <strong>*31:01 negative</strong>"


def test_code_is_literal():
    assert inline("`**not bold**`") == "<code>**not bold**</code>"


def test_blocks():
    html = str(render("Intro line\nsecond line\n\n- one\n  - nested\n- two\n\nAfter"))
    assert html == ("<p>Intro line\nsecond line</p>\n"
                    "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>\n"
                    "<p>After</p>")
    assert str(render(None)) == "" and str(render("")) == ""
