"""Escaping text that is not ours (CPIC's texts, anything from a request) for CommonMark and HTML.

A card's `detail` is Markdown, and CDS Hooks clients render it with whatever CommonMark/GFM renderer
they have, some with raw HTML on. So a text we did not write is put in with every character that
could start markup backslash-escaped (CommonMark §2.4: any ASCII punctuation may be), and on one line,
so "HLA-B*15:02 … HLA-B*15:08" keeps its stars and "<img src=x>" stays text in every renderer.
"""
from __future__ import annotations

import re

# Inline markup anywhere in a line: emphasis, code, links/images, raw HTML and entities, GFM
# strikethrough and tables. Block markers only matter at the start of a line (see below).
_INLINE = re.compile(r"([\\`*_\[\]<>&~|])")
# ...and in request data also what GFM clients turn into autolinks ("https:", "www.", "a@b.org").
_DATA = re.compile(r"([\\`*_\[\]<>&~|:@])")
_WWW = re.compile(r"(?i)\b(www)\.")
_BLOCK_MARKER = re.compile(r"^([-+=#>])")
_LIST_NUMBER = re.compile(r"^(\d+)([.)])")


def md_text(text: object, line_start: bool = False) -> str:
    """A trusted-source text (CPIC's wording): inline markup escaped, whitespace folded to one line;
    `line_start`: it begins a line, so a leading block marker ("- ", "1.", "#") is escaped too."""
    line = _INLINE.sub(r"\\\1", " ".join(str(text).split()))
    if not line_start:
        return line
    line = _BLOCK_MARKER.sub(r"\\\1", line, count=1)
    return _LIST_NUMBER.sub(r"\1\\\2", line, count=1)


def md_data(text: object) -> str:
    """A string from a request (ids, displays, lab names): markup, entities and autolinks escaped, so
    no renderer finds an element in it; readable as it is ("Observation/abc")."""
    line = _WWW.sub(r"\1\\.", _DATA.sub(r"\\\1", " ".join(str(text).split())))
    line = _BLOCK_MARKER.sub(r"\\\1", line, count=1)
    return _LIST_NUMBER.sub(r"\1\\\2", line, count=1)
