"""Retrieval: hybrid search (full-text + pgvector cosine) fused by reciprocal rank."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection, transaction
from pgvector.django import CosineDistance

from knowledge.embeddings import embed_query
from knowledge.models import Audience, Chunk, DocumentStatus

RRF_K = 60


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

    def as_source(self, n: int) -> dict:
        return {
            "n": n, "chunk_id": self.chunk_id, "document_id": self.document_id, "title": self.title,
            "section": self.section, "url": self.url, "similarity": round(self.similarity, 4),
            "lexical": round(self.lexical, 4), "score": round(self.rrf, 5),
        }


def _base_queryset(audiences):
    return Chunk.objects.filter(document__status=DocumentStatus.READY, document__collection__audience__in=audiences)


def chunk_search(*, query: str, k: int = 5, audiences=(Audience.CUSTOMER,), candidates: int = 20,
                 query_vector: list[float] | None = None) -> list[SearchHit]:
    """Top ``k`` chunks for ``query`` among the given audiences (customer-visible by default)."""
    query = query.strip()
    if not query:
        return []
    vector = query_vector if query_vector is not None else embed_query(query)
    fields = ("id", "document_id", "document__title", "document__url", "section", "text")
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Filtered HNSW scans keep looking until they have enough rows (pgvector 0.8).
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(40, candidates * 2)])
        dense = list(
            _base_queryset(audiences)
            .annotate(distance=CosineDistance("embedding", vector))
            .order_by("distance")
            .values(*fields, "distance")[:candidates]
        )
    tsquery = SearchQuery(query, search_type="websearch", config="english")
    lexical = list(
        _base_queryset(audiences)
        .filter(search_vector=tsquery)
        .annotate(rank=SearchRank("search_vector", tsquery))
        .order_by("-rank")
        .values(*fields, "rank")[:candidates]
    )
    if not lexical:
        # websearch syntax ANDs every word; retry as OR so long questions still match.
        words = [w for w in "".join(c if c.isalnum() else " " for c in query).split() if len(w) > 2]
        if words:
            or_query = SearchQuery(" | ".join(words), search_type="raw", config="english")
            lexical = list(
                _base_queryset(audiences)
                .filter(search_vector=or_query)
                .annotate(rank=SearchRank("search_vector", or_query))
                .order_by("-rank")
                .values(*fields, "rank")[:candidates]
            )
    hits: dict[str, SearchHit] = {}

    def hit_for(row) -> SearchHit:
        key = str(row["id"])
        if key not in hits:
            hits[key] = SearchHit(
                chunk_id=key, document_id=str(row["document_id"]), title=row["document__title"],
                section=row["section"], url=row["document__url"], text=row["text"],
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
    missing = [h for h in hits.values() if "dense" not in h.ranks]
    if missing:
        # Lexical-only hits still need a similarity for the answer threshold.
        extra = dict(
            Chunk.objects.filter(pk__in=[h.chunk_id for h in missing])
            .annotate(distance=CosineDistance("embedding", vector))
            .values_list("id", "distance")
        )
        for h in missing:
            h.similarity = 1.0 - float(extra[uuid.UUID(h.chunk_id)])
    return sorted(hits.values(), key=lambda h: h.rrf, reverse=True)[:k]
