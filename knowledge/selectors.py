"""Retrieval: hybrid search (full-text + pgvector cosine) fused by reciprocal rank."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace

from django.contrib.postgres.search import SearchQueryField
from django.db import connection, transaction
from django.db.models import BooleanField, F, FloatField, Func, OuterRef, Subquery, Value
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, VectorField

from knowledge.embedding_spaces import active_space
from knowledge.embeddings import configured_spec, embed_query
from knowledge.models import Audience, Chunk, ChunkEmbedding, DocumentKind, DocumentStatus

# Figures in the comments below come from bench/retrieval_quality.py on SciFact (5,183
# abstracts, 12,090 chunks, 300 test claims; thresholds chosen on its 809 train claims) and
# StackFAQ (125 FAQ threads, 1,249 paraphrased questions).
RRF_K = 60  # 10 to 60 made no measurable difference
# HNSW candidate list: 40 missed neighbours an exact scan finds (dense nDCG@10 0.646 on
# SciFact, 0.654 at 100, 0.656 exact) for about 1 ms more.
HNSW_EF_SEARCH = 100
# Cosine gap between the best chunk and the best chunk of any other document above which the
# dense winner goes first (see _fuse). 0.05 was best on SciFact train (0.03 to 0.1 all help).
DENSE_CLEAR_MARGIN = 0.05
# Narrow scopes of at most this many chunks are ranked exactly rather than through the index
# (about 1 us a chunk for 384 dimensions).
EXACT_SCAN_MAX_ROWS = 5000
# A curated answer (knowledge/curated.py) at least this similar to the query goes first (see
# _fuse), and the assistant answers with it word for word. Calibrated with MiniLM on the demo:
# 11 curated answers, 3 paraphrases each and 36 other questions, 12 of them near misses ("Can I
# return a used sleeping bag?" against "Can I return a tent I have already used?"). At 0.61, 26
# of 33 paraphrases get their answer and none another one; 3 of 36 near misses get a curated
# answer (0.66 to 0.70). 0.60: 28/33, 4/36; 0.65: 18/33, 3/36; 0.70: 10/33, 1/36. A chunk
# embeds the question with the answer, so long answers score lower; a missed paraphrase is still
# answered from the ranked passages, a false match is answered wrongly, hence not lower.
CURATED_MIN_SIMILARITY = 0.61


@dataclass
class SearchHit:
    chunk_id: str
    document_id: str
    title: str
    section: str
    url: str
    text: str
    similarity: float = 0.0
    lexical: float = 0.0
    rrf: float = 0.0
    ranks: dict = field(default_factory=dict)
    curated: bool = False  # a curated answer: its title is a customer question, its text the answer

    @property
    def curated_match(self) -> bool:
        """A curated answer to this very question (or a paraphrase): answer with it."""
        return self.curated and self.similarity >= CURATED_MIN_SIMILARITY

    def as_source(self, n: int) -> dict:
        return {
            "n": n, "chunk_id": self.chunk_id, "document_id": self.document_id, "title": self.title,
            "section": self.section, "url": self.url, "similarity": round(self.similarity, 4),
            "lexical": round(self.lexical, 4), "score": round(self.rrf, 5), "curated": self.curated,
        }


@dataclass(frozen=True)
class SearchScope:
    """Which chunks a search may return: published, ready documents of the given audiences,
    optionally only of some collections and only of documents carrying every given label."""

    audiences: tuple = (Audience.CUSTOMER,)
    collection_ids: tuple | None = None
    metadata: dict | None = None
    excluded: str | None = None  # a tsquery (text form) no returned chunk may match: the query's -words

    def queryset(self):
        qs = Chunk.objects.filter(document__status=DocumentStatus.READY, document__published=True,
                                  document__collection__audience__in=self.audiences)
        if self.collection_ids is not None:
            qs = qs.filter(document__collection_id__in=self.collection_ids)
        if self.metadata:
            qs = qs.filter(document__metadata__contains=self.metadata)
        if self.excluded:
            qs = qs.filter(_TsMatch(self.excluded, negated=True))
        return qs

    @property
    def narrowed(self) -> bool:
        # Exclusions count: they can leave the index scan short of rows, then the exact scan
        # must take over (see _dense_candidates).
        return self.collection_ids is not None or bool(self.metadata) or bool(self.excluded)


class _TsMatch(Func):
    """``search_vector @@ 'tsquery'`` (or its negation) for a tsquery already in text form. An
    expression rather than RawSQL, so the column keeps its alias inside the dense search's
    correlated subquery."""

    output_field = BooleanField()

    def __init__(self, tsquery: str, *, negated: bool = False):
        super().__init__(F("search_vector"), Cast(Value(tsquery), SearchQueryField()))
        self.template = "NOT (%(expressions)s)" if negated else "(%(expressions)s)"
        self.arg_joiner = " @@ "


SEARCH_MODES = ("hybrid", "lexical", "dense")


def chunk_search(*, query: str, k: int = 5, audiences=(Audience.CUSTOMER,), candidates: int = 20,
                 query_vector: list[float] | None = None, mode: str = "hybrid", collection_ids=None,
                 metadata: dict | None = None) -> list[SearchHit]:
    """Top ``k`` chunks for ``query`` among the given audiences (customer-visible by default).

    ``collection_ids`` limits the search to those collections (an empty list finds nothing);
    ``metadata`` to documents whose labels include every given one ({"product": "tents"}).
    ``mode`` "lexical" or "dense" uses one retriever alone (benchmarks compare them with the
    hybrid). "lexical" embeds nothing: hits get a similarity only if ``query_vector`` is given.
    ``query`` may use websearch syntax ("phrase", -word, or): see parse_query."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
    scope = SearchScope(audiences=tuple(audiences),
                        collection_ids=None if collection_ids is None else tuple(collection_ids),
                        metadata=dict(metadata) if metadata else None)
    if scope.collection_ids == ():
        return []
    query = query.strip()
    if not query:
        return []
    syntax = parse_query(query)
    required = None
    if syntax.operators:
        if not syntax.text:
            return []  # every word is excluded (or the quotes hold nothing): nothing to look for
        required, excluded = _syntax_tsqueries(syntax)
        scope = replace(scope, excluded=excluded)
        if syntax.text != query and query_vector is not None:
            # The caller embedded the operators too ("-mould" pulls towards mould): embed the
            # words searched for.
            query_vector = embed_query(syntax.text)
        query = syntax.text
    space = active_space()
    # A caller's vector comes from the configured model; while re-embedding has not switched
    # the index over to it yet, the query is embedded again with the index's model.
    if query_vector is not None and space.spec != configured_spec():
        query_vector = embed_query(query, spec=space.spec)
    vector = query_vector if query_vector is not None or mode == "lexical" else embed_query(query, spec=space.spec)
    fields = ("id", "document_id", "document__title", "document__url", "document__kind", "section", "text")
    dense = lexical = []
    if mode != "lexical":
        dense = _dense_candidates(scope=scope, space=space, vector=vector, candidates=candidates, fields=fields)
    if mode != "dense":
        lexical = _lexical_candidates(scope=scope, query=query, candidates=candidates, fields=fields,
                                      required=required)
    return _fuse(dense=dense, lexical=lexical, space=space, vector=vector, k=k)


# --- search syntax --------------------------------------------------------------------------
#
# The search box understands PostgreSQL's websearch syntax: "quoted phrase", -word (or
# -"phrase") and `or`. Customers type plain questions, and those keep the IDF-weighted OR of
# their words below; a query is read as syntax only when it holds a pair of quotes or a -word.
# Then phrases are required of the lexical hits and excluded words and phrases of every hit
# (dense ones too). Unquoted words stay ranking words, as in a plain question: `or` only
# matters between required items ("return label" or "prepaid label": either phrase), binding
# tighter than the implicit AND, as in web search engines (websearch_to_tsquery's own
# precedence is the other way round, so each group is converted on its own).
# A quote without its partner is ignored, and so is a dash not followed by a letter or a
# quote ("-5 degrees", "E2f-1, -2"): that reads as text, not as an exclusion.


@dataclass(frozen=True)
class QuerySyntax:
    text: str  # the query without operators: what is embedded and whose words are ranked
    required: tuple[str, ...] = ()  # websearch_to_tsquery inputs, each of which a lexical hit must match
    excluded: tuple[str, ...] = ()  # websearch_to_tsquery inputs no hit may match

    @property
    def operators(self) -> bool:
        return bool(self.required or self.excluded)


def parse_query(query: str) -> QuerySyntax:
    """Split a search box query into ranking text, required phrases and exclusions. A query
    without a quote pair or a -word comes back as it is, with no operators."""
    original = query
    if query.count('"') % 2:
        last = query.rindex('"')
        query = query[:last] + " " + query[last + 1:]
    items: list[tuple[str, str, bool]] = []  # (word | phrase | or, text, negated)
    pos, end = 0, len(query)
    while pos < end:
        if query[pos].isspace():
            pos += 1
            continue
        negated = False
        if query[pos] == "-" and (pos == 0 or query[pos - 1].isspace()):
            after = pos
            while after < end and query[after] == "-":
                after += 1
            if after < end and (query[after].isalpha() or query[after] == '"'):
                negated, pos = True, after
        if query[pos] == '"':
            close = query.index('"', pos + 1)
            items.append(("phrase", " ".join(query[pos + 1:close].split()), negated))
            pos = close + 1
            continue
        start = pos
        while pos < end and not query[pos].isspace() and query[pos] != '"':
            pos += 1
        word = query[start:pos]
        items.append(("or" if word.lower() == "or" and not negated else "word", word, negated))
    # Punctuation alone ("-", "&", an empty phrase) is no word to search for or to exclude.
    items = [item for item in items if item[0] == "or" or any(c.isalnum() for c in item[1])]
    if not any(kind == "phrase" or negated for kind, _, negated in items):
        return QuerySyntax(text=original)
    groups: list[list[tuple[str, str]]] = []
    joined = False
    for kind, text, negated in items:
        if negated:
            continue
        if kind == "or":
            joined = bool(groups)
            continue
        if joined:
            groups[-1].append((kind, text))
        else:
            groups.append([(kind, text)])
        joined = False
    # websearch_to_tsquery inputs; a word keeps no leading dash, which would read as a minus.
    as_input = {"phrase": '"{}"'.format, "word": lambda word: word.lstrip("-")}
    wanted = [(kind, text) for kind, text, negated in items if not negated]
    return QuerySyntax(
        # "" when every word is excluded: such a query finds nothing.
        text=" ".join(text for _, text in wanted) if any(kind != "or" for kind, _ in wanted) else "",
        required=tuple(" or ".join(as_input[kind](text) for kind, text in group)
                       for group in groups if any(kind == "phrase" for kind, _ in group)),
        excluded=tuple(as_input[kind](text) for kind, text, negated in items if negated),
    )


def _syntax_tsqueries(syntax: QuerySyntax) -> tuple[str | None, str | None]:
    """The required and the excluded tsqueries (text form) of a query's operators, or None. A
    phrase of stop words only ("the") converts to nothing and is dropped."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array(SELECT websearch_to_tsquery(%s::regconfig, x)::text FROM unnest(%s::text[]) AS x),"
            " array(SELECT websearch_to_tsquery(%s::regconfig, x)::text FROM unnest(%s::text[]) AS x)",
            [TS_CONFIG, list(syntax.required), TS_CONFIG, list(syntax.excluded)],
        )
        required, excluded = cursor.fetchone()
    required = [f"( {q} )" for q in required if q]
    excluded = [f"( {q} )" for q in excluded if q]
    return " & ".join(required) or None, " | ".join(excluded) or None


def _distance(space, vector):
    """Cosine distance of the space's vectors to ``vector``, cast as the space's index is."""
    return CosineDistance(Cast("embedding", VectorField(dimensions=space.dimensions)), vector)


def _dense_candidates(*, scope: SearchScope, space, vector, candidates: int, fields) -> list[dict]:
    # The scope is checked per index row by a correlated scalar subquery, which PostgreSQL
    # never turns into a join: the plan stays "HNSW index scan, filter, limit", and the
    # iterative scan (pgvector 0.8) keeps reading the index until enough rows pass the filter.
    # As a join, the planner preferred an exact scan and sort for small filtered estimates
    # (35 ms instead of 7 on 20k chunks).
    #
    # A narrow scope (a collection or label filter matching few chunks) would make the index
    # scan wade through thousands of rows: then an exact scan of the matching chunks is both
    # faster and complete. It is also the fallback when the index scan gives up early
    # (hnsw.max_scan_tuples) with fewer rows than asked for.
    if _few_chunks(scope):
        return _dense_exact(scope=scope, space=space, vector=vector, candidates=candidates, fields=fields)
    allowed = Subquery(scope.queryset().filter(pk=OuterRef("chunk_id")).order_by().values(ok=Value(True))[:1],
                       output_field=BooleanField())
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(HNSW_EF_SEARCH, candidates * 2)])
        ranked = list(
            ChunkEmbedding.objects.filter(space_id=space.pk).filter(allowed)
            .annotate(distance=_distance(space, vector))
            .order_by("distance")
            .values_list("chunk_id", "distance")[:candidates]
        )
    if len(ranked) < candidates and (scope.narrowed or scope.audiences != tuple(Audience.values)):
        return _dense_exact(scope=scope, space=space, vector=vector, candidates=candidates, fields=fields)
    rows = {row["id"]: row for row in Chunk.objects.filter(pk__in=[c for c, _ in ranked]).values(*fields)}
    # relaxed_order may return rows slightly out of order: sort them by distance.
    return [{**rows[c], "distance": d} for c, d in sorted(ranked, key=lambda r: r[1]) if c in rows]


def _few_chunks(scope: SearchScope) -> bool:
    """Whether the scope holds at most EXACT_SCAN_MAX_ROWS chunks. A small knowledge base is
    ranked exactly too: an approximate index buys nothing there, and its graph can be crowded
    with entries of deleted rows that vacuum has not removed yet."""
    if not scope.narrowed:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [Chunk._meta.db_table])
            row = cursor.fetchone()
        if row and row[0] > EXACT_SCAN_MAX_ROWS:
            return False  # the planner's estimate is enough to know the table is large
    return scope.queryset().values("pk")[:EXACT_SCAN_MAX_ROWS + 1].count() <= EXACT_SCAN_MAX_ROWS


def _dense_exact(*, scope: SearchScope, space, vector, candidates: int, fields) -> list[dict]:
    """Exact cosine ranking of the scope's chunks: every distance is computed. Index scans are
    off for the statement, or the planner could pick the HNSW index for the ORDER BY (without
    an iterative scan it stops after ef_search rows, before the filters)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
        return list(
            scope.queryset().filter(embeddings__space_id=space.pk)
            .annotate(distance=CosineDistance(Cast("embeddings__embedding", VectorField(dimensions=space.dimensions)),
                                              vector))
            .order_by("distance")
            .values(*fields, "distance")[:candidates]
        )


# --- lexical retrieval ----------------------------------------------------------------------
#
# ts_rank alone knows nothing of how rare a word is, and websearch/plain tsqueries AND every
# word, so a long question matched nothing and fell back to an OR ranked by raw counts. Here a
# query is its stemmed lexemes ORed, and a chunk scores sum(idf(term) * ts_rank(chunk, term)):
# BM25-like, since ts_rank of one term saturates with its frequency (1, 1.25, 1.36 ... times a
# single occurrence) and counts a heading (weight A) 2.5 times the body (weight B).
# Measured with bench/retrieval_quality.py: lexical nDCG@10 0.511 -> 0.670 on SciFact
# (BM25 reference 0.665), 0.604 -> 0.742 on StackFAQ.
TS_CONFIG = "english"  # the config Chunk.search_vector is built with
# A pasted e-mail should not turn into a hundred-term query; questions have a handful.
LEXICAL_MAX_TERMS = 32
# Only chunks holding one of the rarest query terms are scored (every term still adds to
# their score): the rarest terms, taken in order while the chunks holding them stay within
# this share of the table. Scoring costs about 5-10 us a chunk, and chunks that share only
# common words with the query rarely reach the top: on SciFact a 2% share ranks as well as
# scoring every chunk that shares any word (nDCG@10 0.666 both), 1% loses 0.01, 0.5% 0.06.
# On 100k chunks, 2% keeps hybrid search at about 35 ms (p50, 2 busy cores).
LEXICAL_SCORED_SHARE = 0.02
LEXICAL_SCORED_ROWS = (500, 4000)  # bounds of that budget: small tables, and latency on huge ones
# Terms that ANALYZE did not list as common are counted with the GIN index; they are rare then,
# and this cap only matters while the table has no statistics yet.
LEXICAL_DF_CAP = 1000
# When even the rarest query term is held by more chunks than that budget, only chunks holding
# the two rarest terms are scored, unless fewer than the candidates asked for do (see
# _lexical_candidates). With the pre-ranking below, on 100k generated chunks (bench/
# retrieval_latency.py --lexical-only): lexical p95 28-33 -> 16-25 ms on 2 busy cores, 99.8% of
# the top-10 lexical score kept. The three rarest instead: 2 ms less, 97.9% kept. SciFact never
# gets here; forced to (a budget of 50 chunks), 28 of its 300 test claims are paired and
# lexical nDCG@10 stays 0.607.
LEXICAL_PAIR_COMMON = True
# Unscoped searches matching at least LEXICAL_PRERANK_MIN_ROWS chunks rank this many times the
# candidates on the chunk table alone, then keep those in scope (see _lexical_candidates). Exact,
# unless fewer than the candidates pass; then the scoped query runs as well. Below that many
# rows the second round trip costs more than it saves.
LEXICAL_PRERANKED = 3
LEXICAL_PRERANK_MIN_ROWS = 1000
# ts_rank normalization 1 divides by 1 + log(length): +0.02 nDCG@10 on SciFact, +0.006 on StackFAQ.
LEXICAL_NORMALIZATION = 1


def _tsquery_literal(lexeme: str) -> str:
    """A lexeme quoted for tsquery input, so that it is matched as is (it is already stemmed)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _query_terms(query: str) -> tuple[int, list[tuple[str, int, float]]]:
    """Chunks in the table, and (tsquery literal, chunks holding it, idf) for each distinct
    lexeme of ``query``, rarest first.

    Frequent terms are counted from ANALYZE's most-common-elements statistics (an exact count
    would read thousands of rows), the others with the GIN index, which is cheap for rare terms.
    Counts span every chunk, whatever its audience: idf is a property of the language used."""
    table = Chunk._meta.db_table
    quoted = connection.ops.quote_name(table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array(SELECT lexeme FROM unnest(to_tsvector(%s::regconfig, %s)) ORDER BY positions[1] LIMIT %s)",
            [TS_CONFIG, query, LEXICAL_MAX_TERMS],
        )
        lexemes = cursor.fetchone()[0]
        if not lexemes:
            return 0, []
        literals = [_tsquery_literal(lexeme) for lexeme in lexemes]
        # Only the quoted table name is formatted in; the query's words are parameters.
        cursor.execute(
            f"""
            WITH size AS (
                -- The planner's estimate is free; a small or never-analyzed table is counted.
                SELECT CASE WHEN reltuples >= 1000 THEN reltuples::bigint
                            ELSE (SELECT count(*) FROM {quoted}) END AS n
                FROM pg_class WHERE oid = %(regclass)s::regclass
            ), common AS MATERIALIZED (
                SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs
                FROM pg_stats
                WHERE schemaname = current_schema() AND tablename = %(table)s AND attname = 'search_vector'
            )
            SELECT size.n, array(
                SELECT coalesce(
                    (SELECT round(common.freqs[array_position(common.elems, t.lexeme)] * size.n)::bigint
                     FROM common),
                    (SELECT count(*) FROM (SELECT 1 FROM {quoted} c WHERE c.search_vector @@ t.q
                                           LIMIT %(cap)s) AS found))
                FROM unnest(%(lexemes)s::text[], %(literals)s::tsquery[]) WITH ORDINALITY AS t(lexeme, q, i)
                ORDER BY t.i)
            FROM size
            """,  # noqa: S608
            {"regclass": quoted, "table": table, "cap": LEXICAL_DF_CAP, "lexemes": lexemes, "literals": literals},
        )
        total, counts = cursor.fetchone()
    total = max(total, *counts, 1)
    # BM25's idf, which stays positive for a term found in every chunk.
    terms = [(lit, df, math.log(1 + (total - df + 0.5) / (df + 0.5))) for lit, df in zip(literals, counts)]
    return total, sorted(terms, key=lambda term: term[1])


class _TsRank(Func):
    """ts_rank(search_vector, 'tsquery', normalization) for a tsquery already in text form."""

    function = "ts_rank"
    output_field = FloatField()

    def __init__(self, tsquery: str):
        super().__init__(F("search_vector"), Cast(Value(tsquery), SearchQueryField()), Value(LEXICAL_NORMALIZATION))


def _lexical_candidates(*, scope: SearchScope, query: str, candidates: int, fields,
                        required: str | None = None) -> list[dict]:
    """The ``candidates`` best chunks by IDF-weighted ts_rank. ``required``, a tsquery (text
    form) of the query's phrases, must match every hit; it replaces the rarest-terms filter."""
    total, terms = _query_terms(query)
    if not terms:
        return []
    # sum(idf(term) * ts_rank(chunk, term)), literals and weights as parameters.
    weighted = [_TsRank(literal) * Value(idf) for literal, _, idf in terms]
    score = sum(weighted[1:], weighted[0])

    def ranked(tsquery: str, rows: float) -> list[dict]:
        """The best chunks matching ``tsquery``, which about ``rows`` chunks do (inf: unknown)."""
        if not scope.narrowed and rows >= LEXICAL_PRERANK_MIN_ROWS:
            # Ranked on the chunk table alone first: the join to documents for the scope and
            # the wide rows cost more than the scoring when thousands of chunks match. When
            # enough of the best pass the scope they are exactly the best within it.
            top = list(Chunk.objects.filter(_TsMatch(tsquery)).annotate(rank=score).order_by("-rank")
                       .values_list("pk", "rank")[:LEXICAL_PRERANKED * candidates])
            in_scope = {row["id"]: row for row in
                        scope.queryset().filter(pk__in=[pk for pk, _ in top]).values(*fields)}
            kept = [{**in_scope[pk], "rank": rank} for pk, rank in top if pk in in_scope][:candidates]
            if len(kept) >= candidates or len(top) < LEXICAL_PRERANKED * candidates:
                return kept
        return list(scope.queryset().filter(_TsMatch(tsquery)).annotate(rank=score).order_by("-rank")
                    .values(*fields, "rank")[:candidates])

    if required:
        return ranked(required, math.inf)
    low, high = LEXICAL_SCORED_ROWS
    budget = min(high, max(low, LEXICAL_SCORED_SHARE * total))
    matching, rows = [], 0
    for literal, df, _ in terms:
        if matching and rows + df > budget:
            break
        matching.append(literal)
        rows += df
    if LEXICAL_PAIR_COMMON and len(terms) > 1 and terms[0][1] > budget:
        # Even the rarest term is common: scoring every chunk that holds it was what set the
        # p95. Chunks holding the two rarest terms are far fewer and rank first nearly always;
        # when there are not enough of them, the rarest term alone decides as before.
        found = ranked(f"{terms[0][0]} & {terms[1][0]}", terms[0][1])
        if len(found) >= candidates:
            return found
    return ranked(" | ".join(matching), rows)


def _fuse(*, dense: list[dict], lexical: list[dict], space, vector, k: int) -> list[SearchHit]:
    hits: dict[str, SearchHit] = {}

    def hit_for(row) -> SearchHit:
        key = str(row["id"])
        if key not in hits:
            hits[key] = SearchHit(
                chunk_id=key, document_id=str(row["document_id"]), title=row["document__title"],
                section=row["section"], url=row["document__url"], text=row["text"],
                curated=row["document__kind"] == DocumentKind.CURATED,
            )
        return hits[key]

    for rank, row in enumerate(dense, start=1):
        hit = hit_for(row)
        hit.similarity = 1.0 - float(row["distance"])
        hit.ranks["dense"] = rank
        hit.rrf += 1.0 / (RRF_K + rank)
    for rank, row in enumerate(lexical, start=1):
        hit = hit_for(row)
        hit.lexical = float(row["rank"])
        hit.ranks["lexical"] = rank
        hit.rrf += 1.0 / (RRF_K + rank)
    if dense and lexical:
        # A chunk that stands out in the dense ranking (the best chunk of any other document is
        # far less similar) is nearly always right: with a gap of 0.1 or more the dense top hit
        # was relevant for 92% of SciFact and 100% of StackFAQ queries, against 84% and 66% for
        # the lexical top hit. It scores as if the lexical retriever had ranked it first too,
        # so plain RRF cannot push it below a lexical near-miss. Hybrid nDCG@10: SciFact test
        # 0.716 -> 0.719 (train 0.711 -> 0.719), StackFAQ 0.911 -> 0.960.
        top = hits[str(dense[0]["id"])]
        runner_up = next((row for row in dense if row["document_id"] != dense[0]["document_id"]), dense[-1])
        if top.similarity - (1.0 - float(runner_up["distance"])) >= DENSE_CLEAR_MARGIN:
            top.rrf = max(top.rrf, 2.0 / (RRF_K + 1))
    missing = [h for h in hits.values() if "dense" not in h.ranks]
    if missing and vector is not None:
        # Lexical-only hits still need a similarity for the answer threshold.
        extra = dict(
            ChunkEmbedding.objects.filter(space_id=space.pk, chunk_id__in=[h.chunk_id for h in missing])
            .annotate(distance=_distance(space, vector))
            .values_list("chunk_id", "distance")
        )
        for h in missing:
            distance = extra.get(uuid.UUID(h.chunk_id))
            h.similarity = 0.0 if distance is None else 1.0 - float(distance)
    ranked = sorted(hits.values(), key=lambda h: h.rrf, reverse=True)
    # An agent wrote this answer for this question: the closest such answer goes first, the
    # rest keep their fused order.
    best_curated = max((h for h in ranked if h.curated_match), key=lambda h: h.similarity, default=None)
    if best_curated is not None:
        ranked.remove(best_curated)
        ranked.insert(0, best_curated)
    return ranked[:k]
