"""Markdown-aware chunking: each chunk keeps the title and section heading it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class ChunkDraft:
    position: int
    section: str
    text: str


def split_sentences(text: str) -> list[str]:
    text = " ".join(text.split())
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def markdown_title(body: str, default: str) -> str:
    for line in body.splitlines():
        m = _HEADING.match(line.strip())
        if m and len(m.group(1)) == 1:
            return m.group(2).strip()
    return default


def chunk_markdown(body: str, *, max_chars: int = 900, overlap_sentences: int = 1) -> list[ChunkDraft]:
    """Split by headings, then pack sentences into chunks of at most ``max_chars``,
    repeating the last ``overlap_sentences`` of a chunk at the start of the next."""
    sections: list[tuple[str, list[str]]] = []
    current_heading, current_lines = "", []
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("<!--"):
            continue
        m = _HEADING.match(line)
        if m:
            if current_lines:
                sections.append((current_heading, current_lines))
            current_heading = m.group(2).strip() if len(m.group(1)) > 1 else current_heading
            current_lines = []
            continue
        current_lines.append(line)
    if current_lines:
        sections.append((current_heading, current_lines))

    drafts: list[ChunkDraft] = []
    for heading, lines in sections:
        paragraphs = [p for p in "\n".join(lines).split("\n\n") if p.strip()]
        sentences = [s for p in paragraphs for s in split_sentences(p)]
        if not sentences:
            continue
        packed: list[str] = []
        for sentence in sentences:
            candidate = " ".join(packed + [sentence])
            if packed and len(candidate) > max_chars:
                drafts.append(ChunkDraft(len(drafts), heading, " ".join(packed)))
                packed = packed[-overlap_sentences:] if overlap_sentences else []
                # The overlap is dropped where it would push the next chunk over the limit.
                while packed and len(" ".join(packed + [sentence])) > max_chars:
                    packed.pop(0)
            packed.append(sentence)
        if packed:
            drafts.append(ChunkDraft(len(drafts), heading, " ".join(packed)))
    return drafts
