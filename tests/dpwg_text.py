"""DPWG's advice compared with PharmGKB's export word for word. The export writes advice as HTML
paragraphs and list items; a card shows one paragraph, ending a block that has no punctuation with ';' or
'.' (cds.knowledge.dpwg_importer.recommendation_text). So the comparison is of words: tags dropped, and
the '.' or ';' that may close a block left aside."""
from __future__ import annotations

import html
import re


def words(text: str) -> str:
    text = re.sub(r"\s+(?=[.,;:])", "", text)          # "coumarins ." (a tag's edge) is "coumarins."
    return " ".join(w.rstrip(".;") for w in text.split())


def source_words(markup: str) -> str:
    return words(html.unescape(re.sub(r"<[^>]+>", " ", markup)))
