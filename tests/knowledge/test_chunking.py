"""Markdown chunking: sections keep their heading, chunks overlap and respect the size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.chunking import chunk_markdown, markdown_title, split_sentences

ARTICLES = sorted((Path(__file__).resolve().parents[2] / "convo" / "demo" / "articles").glob("*.md"))


def _sentences(prefix: str, n: int, words: int = 8) -> list[str]:
    return [f"{prefix} sentence {i} " + " ".join(["word"] * words) + "." for i in range(1, n + 1)]


def test_each_chunk_keeps_the_heading_of_its_section():
    body = "\n".join([
        "# Returns",
        "<!-- audience: customer -->",
        "Intro text before any section.",
        "",
        "## Time limits",
        "You can return items within 30 days.",
        "",
        "### Opened items",
        "Opened items can be returned if unused.",
        "## How to return",
        "Print the label. Drop the parcel off.",
    ])
    drafts = chunk_markdown(body)
    assert [(d.position, d.section) for d in drafts] == [
        (0, ""), (1, "Time limits"), (2, "Opened items"), (3, "How to return")]
    assert drafts[0].text == "Intro text before any section."
    assert drafts[1].text == "You can return items within 30 days."
    assert drafts[3].text == "Print the label. Drop the parcel off."
    # The title and HTML comments are not part of any chunk's text.
    assert not any("Returns" in d.text or "audience" in d.text for d in drafts)


def test_long_sections_split_into_chunks_that_overlap_by_one_sentence():
    sentences = _sentences("Alpha", 12)
    body = "## Long section\n" + " ".join(sentences)
    drafts = chunk_markdown(body, max_chars=200)
    assert len(drafts) > 2
    assert {d.section for d in drafts} == {"Long section"}
    assert [d.position for d in drafts] == list(range(len(drafts)))
    for previous, current in zip(drafts, drafts[1:]):
        last_sentence = split_sentences(previous.text)[-1]
        assert current.text.startswith(last_sentence)
    # Every sentence is kept, in order.
    seen = []
    for d in drafts:
        for s in split_sentences(d.text):
            if not seen or seen[-1] != s:
                seen.append(s)
    assert seen == sentences


def test_no_overlap_when_switched_off():
    drafts = chunk_markdown("## S\n" + " ".join(_sentences("Beta", 10)), max_chars=150, overlap_sentences=0)
    texts = [s for d in drafts for s in split_sentences(d.text)]
    assert texts == _sentences("Beta", 10)


@pytest.mark.parametrize("max_chars", [120, 200, 350])
def test_chunks_never_exceed_the_size_limit(max_chars):
    # Sentences of varied length, so the overlap plus the next sentence can pass the limit.
    sentences = [f"Gamma {i} " + " ".join(["long"] * (3 + (i * 7) % 17)) + "." for i in range(30)]
    assert max(len(s) for s in sentences) < max_chars
    drafts = chunk_markdown("## Varied\n" + " ".join(sentences), max_chars=max_chars)
    assert drafts
    assert max(len(d.text) for d in drafts) <= max_chars


def test_a_sentence_longer_than_the_limit_is_its_own_chunk():
    giant = "Delta " + " ".join(["giant"] * 60) + "."
    drafts = chunk_markdown(f"## S\nShort one here. {giant} Short two here.", max_chars=100)
    assert [d.text for d in drafts] == ["Short one here.", giant, "Short two here."]


@pytest.mark.parametrize("path", ARTICLES, ids=[p.stem for p in ARTICLES])
def test_demo_articles_chunk_within_the_default_limit(path):
    body = path.read_text()
    drafts = chunk_markdown(body)
    assert drafts, f"{path.stem} has no chunks"
    assert all(len(d.text) <= 900 for d in drafts)
    assert all(d.section for d in drafts), "every demo chunk sits under a ## heading"


def test_empty_or_heading_only_body_has_no_chunks():
    assert chunk_markdown("") == []
    assert chunk_markdown("# Title\n\n## Section\n\n<!-- note -->\n") == []


def test_title_is_the_first_level_one_heading():
    assert markdown_title("intro\n## Sub\n# Real title\n", default="x") == "Real title"
    assert markdown_title("## Only a section\ntext", default="Fallback") == "Fallback"
