"""Escaping text that is not ours (CPIC's texts, anything from a request) for CommonMark and HTML.

A card's `detail` is Markdown, and CDS Hooks clients render it with whatever CommonMark/GFM renderer
they have, some with raw HTML on. So a text we did not write is put in with every character that
could start markup backslash-escaped (CommonMark §2.4: any ASCII punctuation may be), and on one line,
so "HLA-B*15:02 … HLA-B*15:08" keeps its stars and "<img src=x>" stays text in every renderer.
Line breaks in CPIC's texts are kept as CommonMark hard breaks.
"""
from __future__ import annotations

import re

from cds.memo import Memo

# Inline markup anywhere in a line: emphasis, code, links/images, raw HTML and entities, GFM
# strikethrough and tables. Block markers only matter at the start of a line (see below).
_INLINE = re.compile(r"([\\`*_\[\]<>&~|])")
# ...and in request data also what GFM clients turn into autolinks ("https:", "www.", "a@b.org").
_DATA = re.compile(r"([\\`*_\[\]<>&~|:@])")
_WWW = re.compile(r"(?i)\b(www)\.")
_BLOCK_MARKER = re.compile(r"^([-+=#>])")
_LIST_NUMBER = re.compile(r"^(\d+)([.)])")


def md_text(text: object, line_start: bool = False, indent: str = "") -> str:
    if type(text) is str:
        return _ESCAPED.get((text, line_start, indent), lambda: _md_text(text, line_start, indent))
    return _md_text(str(text), line_start, indent)


def _md_text(text: str, line_start: bool = False, indent: str = "") -> str:
    """A trusted-source text (CPIC's wording): inline markup escaped, runs of whitespace folded; CPIC's
    line breaks stay line breaks (CommonMark hard breaks, continued at `indent` inside a list item), and
    the block marker a new line could start ("- ", "1.", "#") is escaped. `line_start`: the text begins
    a line of the Markdown, so its first line is escaped that way too."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    lines = [_INLINE.sub(r"\\\1", line) for line in lines if line]
    out = []
    for i, line in enumerate(lines):
        if i > 0 or line_start:
            line = _LIST_NUMBER.sub(r"\1\\\2", _BLOCK_MARKER.sub(r"\\\1", line, count=1), count=1)
        out.append(line)
    return ("\\\n" + indent).join(out)


# Trusted-source texts are a knowledge base's few thousand strings, escaped again on every card:
# remembered (cds.memo).
_ESCAPED: Memo[str] = Memo(16_384)
md_text.__doc__ = _md_text.__doc__


def md_data(text: object) -> str:
    """A string from a request (ids, displays, lab names): markup, entities and autolinks escaped, so
    no renderer finds an element in it; readable as it is ("Observation/abc")."""
    line = _WWW.sub(r"\1\\.", _DATA.sub(r"\\\1", " ".join(str(text).split())))
    line = _BLOCK_MARKER.sub(r"\\\1", line, count=1)
    return _LIST_NUMBER.sub(r"\1\\\2", line, count=1)
