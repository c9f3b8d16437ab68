"""A small, safe renderer for the Markdown that CDS Hooks card details carry (GitHub-flavoured
Markdown per the specification), so the workbench shows a card's detail the way an EHR does.

Everything is HTML-escaped first; only the constructs below are turned back into tags, so text
from the knowledge base or a pasted request can never inject markup or script:

    paragraphs (blank line between), "- " list items and "  - " nested items,
    **bold**, *italic* / _italic_ (not inside words: "HLA-B*57:01" stays as written),
    `code`, [label](http(s) URL) — links to any other scheme stay plain text.

Anything else is shown as the plain text it is.
"""
from __future__ import annotations

import re

from markupsafe import Markup, escape

_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_UNDERSCORE = re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)")
_ITEM = re.compile(r"^( *)[-*] +(.*)$")
_PLACEHOLDER = "\x00{}\x00"


def inline(text: str) -> str:
    """Escape `text` and render its inline Markdown; returns HTML."""
    codes: list[str] = []

    def keep_code(match: re.Match) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return _PLACEHOLDER.format(len(codes) - 1)

    html = str(escape(text.replace("\x00", "")))
    html = _CODE.sub(keep_code, html)                 # code is literal: no emphasis inside it
    html = _LINK.sub(r'<a href="\2" target="_blank" rel="noopener noreferrer">\1</a>', html)
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    html = _STAR.sub(r"<em>\1</em>", html)
    html = _UNDERSCORE.sub(r"<em>\1</em>", html)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], html)


def render(markdown: str | None) -> Markup:
    """Block structure: paragraphs and (one level of nested) bullet lists."""
    out: list[str] = []
    paragraph: list[str] = []
    items: list[tuple[str, list[str]]] = []          # (item html, nested item htmls)

    def flush_paragraph() -> None:
        if paragraph:
            out.append("<p>" + "\n".join(inline(line) for line in paragraph) + "</p>")
            paragraph.clear()

    def flush_list() -> None:
        if items:
            parts = []
            for text, nested in items:
                sub = "<ul>" + "".join(f"<li>{n}</li>" for n in nested) + "</ul>" if nested else ""
                parts.append(f"<li>{text}{sub}</li>")
            out.append("<ul>" + "".join(parts) + "</ul>")
            items.clear()

    for raw in (markdown or "").splitlines():
        line = raw.rstrip()
        if not line.strip():
            flush_paragraph()
            flush_list()
            continue
        item = _ITEM.match(line)
        if item:
            flush_paragraph()
            indent, text = len(item.group(1)), item.group(2)
            if indent >= 2 and items:
                items[-1][1].append(inline(text))
            else:
                items.append((inline(text), []))
            continue
        if items and raw.startswith("  "):           # a continuation line of the last item
            last_text, nested = items[-1]
            items[-1] = (last_text + "\n" + inline(line.strip()), nested)
            continue
        flush_list()
        paragraph.append(line)
    flush_paragraph()
    flush_list()
    return Markup("\n".join(out))

