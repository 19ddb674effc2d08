"""A deliberately tiny, safe Markdown subset for help-centre articles.

No Markdown library is installed and articles only use headings and paragraphs, so this
escapes everything first and then adds structure: ``#``/``##``/``###`` headings (with ids
made by ``slugify`` so citations can link to a section), ``-``/``*`` bullet lists, and
blank-line separated paragraphs. ``<!-- … -->`` lines (ingestion metadata) are skipped.
"""

from __future__ import annotations

import re

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator, slugify

register = template.Library()

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^[-*]\s+(.*)$")


def _blocks(body: str):
    """Yield ("h", level, text) and ("p" | "ul", lines) blocks from the source text."""
    lines: list[str] = []
    bullets: list[str] = []

    def flush():
        nonlocal lines, bullets
        if lines:
            yield ("p", 0, " ".join(lines))
        if bullets:
            yield ("ul", 0, bullets)
        lines, bullets = [], []

    for raw in (body or "").splitlines():
        line = raw.strip()
        if line.startswith("<!--"):
            continue
        heading = _HEADING.match(line)
        bullet = _BULLET.match(line)
        if not line:
            yield from flush()
        elif heading:
            yield from flush()
            yield ("h", len(heading.group(1)), heading.group(2))
        elif bullet:
            if lines:
                yield ("p", 0, " ".join(lines))
                lines = []
            bullets.append(bullet.group(1))
        else:
            if bullets:
                yield ("ul", 0, bullets)
                bullets = []
            lines.append(line)
    yield from flush()


@register.filter
def help_markdown(body: str, skip_title: bool = True) -> SafeString:
    """Render an article body. The first level-1 heading is dropped by default because the
    page shows the document's title itself."""
    html: list[str] = []
    title_skipped = not skip_title
    for kind, level, content in _blocks(body):
        if kind == "h":
            if level == 1 and not title_skipped:
                title_skipped = True
                continue
            # Level 1 headings after the title become sections; the page has a single <h1>.
            tag = f"h{min(max(level, 2), 4)}"
            html.append(format_html('<{0} id="{1}">{2}</{0}>', tag, slugify(content), content))
        elif kind == "p":
            html.append(format_html("<p>{}</p>", content))
        else:
            items = "".join(format_html("<li>{}</li>", item) for item in content)
            html.append(f"<ul>{items}</ul>")
    return mark_safe("\n".join(html))  # noqa: S308 (every piece above went through format_html)


@register.filter
def help_sections(body: str) -> list[dict]:
    """The article's section headings (level 2), for an "On this page" list."""
    return [{"id": slugify(content), "title": content} for kind, level, content in _blocks(body)
            if kind == "h" and level == 2]


@register.filter
def help_excerpt(body: str, length: int = 160) -> str:
    """The first paragraph as plain text, shortened; escaped by the template as usual."""
    for kind, _level, content in _blocks(body):
        if kind == "p":
            return Truncator(content).chars(length)
    return ""


__all__ = ["help_markdown", "help_sections", "help_excerpt"]
