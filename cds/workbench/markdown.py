"""Card-detail Markdown for the workbench, rendered by a maintained CommonMark implementation
(markdown-it-py) so the preview is what a CommonMark client such as an EHR or the CDS Hooks sandbox
shows.

Raw HTML is off: a tag in the text is shown as the text it is, never turned into an element, and
markdown-it's link validation refuses javascript:, vbscript:, file: and data: URLs. Links open in a
new tab without handing the opener over.
"""
from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("strikethrough")


def _link_open(renderer, tokens, idx, options, env):
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return renderer.renderToken(tokens, idx, options, env)


_md.add_render_rule("link_open", _link_open)


def render(markdown: str | None) -> Markup:
    """Block and inline CommonMark (with GFM strikethrough, which GitHub-flavoured clients apply)."""
    return Markup(_md.render(markdown or "").strip())


def inline(text: str) -> Markup:
    """One line of inline Markdown, without a surrounding paragraph."""
    return Markup(_md.renderInline(text or ""))
