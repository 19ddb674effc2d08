"""The search box's websearch syntax: "phrases", -exclusions and `or`; plain questions untouched."""

from __future__ import annotations

import pytest

import knowledge.selectors as selectors
from knowledge.embeddings import embed_query
from knowledge.models import Audience, Document
from knowledge.selectors import QuerySyntax, chunk_search, parse_query
from knowledge.services import collection_ensure, document_ingest_markdown

MODES = ("hybrid", "lexical", "dense")

ARTICLES = {
    "return-label": "# Printing labels\n\n## At home\nPrint the return label from your order page and tape it to "
                    "the parcel.\n",
    "label-apart": "# Packing boxes\n\n## Names\nLabel every box with your name. A return is free within thirty "
                   "days.\n",
    "prepaid": "# Couriers\n\n## Exchanges\nA prepaid label comes with every exchange we send.\n",
    "tent-mould": "# Tent storage\n\n## Drying\nDry the tent before you store it, or mould grows on the fabric.\n",
    "tent-pegs": "# Tent pitching\n\n## Pegs\nPitch the tent on flat ground and peg the corners first.\n",
}


@pytest.fixture
def articles(db):
    collection = collection_ensure(name="Syntax help", audience=Audience.CUSTOMER)
    for slug, body in ARTICLES.items():
        document_ingest_markdown(collection=collection, slug=slug, body=body)


def slugs(hits) -> set[str]:
    return set(Document.objects.filter(pk__in=[h.document_id for h in hits]).values_list("slug", flat=True))


def lexical_slugs(hits) -> set[str]:
    return slugs([h for h in hits if "lexical" in h.ranks])


# --- parsing (no database) ---------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "How do I return a tent or a stove?",  # `or` alone changes nothing: the words are ORed anyway
    "Can I pitch the tent at -5 degrees?",  # a dash before a digit is text
    "Differentiated E2f-1, -2, -3 TKO cells",
    "my e-mail - it bounced",
    'the "return label',  # a quote without its partner
    '-"',
    '""',
    '"-" - &',
    "or",
])
def test_a_query_without_a_quote_pair_or_a_minus_word_is_plain_text(query):
    assert parse_query(query) == QuerySyntax(text=query)
    assert not parse_query(query).operators


@pytest.mark.parametrize("query, expected", [
    ('"return label"', QuerySyntax(text="return label", required=('"return label"',))),
    ('where is my "return  label" printed', QuerySyntax(text="where is my return label printed",
                                                        required=('"return label"',))),
    ("tent -mould --mildew", QuerySyntax(text="tent", excluded=("mould", "mildew"))),
    ('tent -"mould spots"', QuerySyntax(text="tent", excluded=('"mould spots"',))),
    # `or` joins the items around it and binds tighter than the implicit AND
    ('"return label" or "prepaid label" courier', QuerySyntax(
        text="return label or prepaid label courier", required=('"return label" or "prepaid label"',))),
    ('"return label" OR refund "order page"', QuerySyntax(
        text="return label OR refund order page", required=('"return label" or refund', '"order page"'))),
    ('"return label" or -5 -3d', QuerySyntax(text="return label or -5 -3d", required=('"return label" or 5',))),
    ("-tent -mould", QuerySyntax(text="", excluded=("tent", "mould"))),
    ("- -tent or", QuerySyntax(text="", excluded=("tent",))),
    ('"return label" "tape it', QuerySyntax(text="return label tape it", required=('"return label"',))),
])
def test_operators_are_parsed(query, expected):
    assert parse_query(query) == expected


# --- phrases -----------------------------------------------------------------------------------

def test_a_quoted_phrase_must_appear_as_a_phrase_in_lexical_hits(articles):
    # The same words apart match too without quotes...
    assert slugs(chunk_search(query="return label", k=10, mode="lexical")) == {"return-label", "label-apart",
                                                                                 "prepaid"}
    # ...with quotes only the chunk holding the phrase.
    for query in ('"return label"', '"Return Labels"', 'where do I print the "return label"'):
        hits = chunk_search(query=query, k=10, mode="lexical")
        assert slugs(hits) == {"return-label"}, query
    # In the hybrid the lexical side keeps the phrase; dense hits are by meaning, as before.
    hybrid = chunk_search(query='"return label"', k=10, query_vector=embed_query('"return label"'))
    assert lexical_slugs(hybrid) == {"return-label"}
    assert slugs(hybrid[:1]) == {"return-label"}


def test_phrases_are_all_required_unless_joined_by_or(articles):
    assert chunk_search(query='"return label" "prepaid label"', k=10, mode="lexical") == []
    either = chunk_search(query='"return label" or "prepaid label"', k=10, mode="lexical")
    assert slugs(either) == {"return-label", "prepaid"}
    # A word joined by `or` to a phrase is an alternative to it.
    assert slugs(chunk_search(query='"prepaid label" or pitch', k=10, mode="lexical")) == {"prepaid", "tent-pegs"}


def test_a_phrase_of_stop_words_only_requires_nothing(articles):
    assert slugs(chunk_search(query='"the" tent', k=10, mode="lexical")) == {"tent-mould", "tent-pegs"}


# --- exclusions --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_an_excluded_word_removes_its_chunks_in_every_mode(articles, mode):
    # The knowledge base is small, so every mode returns the mould article without the minus...
    assert "tent-mould" in slugs(chunk_search(query="tent storage", k=10, mode=mode))
    for query in ("tent storage -mould", "tent storage -Moulds", 'tent storage -"mould grows"'):
        hits = chunk_search(query=query, k=10, mode=mode)
        assert hits, query
        assert "tent-mould" not in slugs(hits), query
        assert all("mould" not in h.text for h in hits)
    # ...also when the caller embedded the raw query, as the office search page does.
    hits = chunk_search(query="tent -mould", k=10, mode=mode, query_vector=embed_query("tent -mould"))
    assert hits and "tent-mould" not in slugs(hits)
    assert "tent-pegs" in slugs(hits)


def test_exclusions_hold_on_the_hnsw_path_too(articles, monkeypatch):
    # Force the approximate index scan (the scope is a correlated subquery there): few
    # candidates, so it does not fall back to the exact scan.
    monkeypatch.setattr(selectors, "EXACT_SCAN_MAX_ROWS", 0)
    monkeypatch.setattr(selectors, "_dense_exact", lambda **kwargs: pytest.fail("the exact scan ran"))
    for _ in range(3):
        hits = chunk_search(query="storing a tent -mould", k=2, candidates=2, mode="dense")
        assert len(hits) == 2 and "tent-mould" not in slugs(hits)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ["-tent", "-tent -mould", '-"return label"', "- -tent or"])
def test_a_query_whose_only_words_are_excluded_finds_nothing(articles, mode, query):
    assert chunk_search(query=query, k=10, mode=mode) == []


# --- malformed operators -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ['-"', '"', '"""', "-", "--", "- or -", '"-"', "or", 'tent "', '"return label'])
def test_malformed_operators_do_not_raise(articles, mode, query):
    hits = chunk_search(query=query, k=10, mode=mode)
    assert isinstance(hits, list)


def test_an_unbalanced_quote_is_read_as_plain_text(articles):
    plain = chunk_search(query="return label", k=10, mode="lexical")
    unbalanced = chunk_search(query='"return label', k=10, mode="lexical")
    assert [(h.chunk_id, h.lexical) for h in unbalanced] == [(h.chunk_id, h.lexical) for h in plain]


# --- plain questions -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_plain_questions_with_or_are_searched_as_before(articles, mode, monkeypatch):
    question = "Do I print the return label or does the courier bring one?"
    hits = chunk_search(query=question, k=10, mode=mode)
    # The same as with the syntax switched off.
    monkeypatch.setattr(selectors, "parse_query", lambda query: QuerySyntax(text=query))
    before = chunk_search(query=question, k=10, mode=mode)
    assert [(h.chunk_id, h.rrf, h.lexical) for h in hits] == [(h.chunk_id, h.rrf, h.lexical) for h in before]
    assert hits
