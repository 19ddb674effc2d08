#!/usr/bin/env python
"""Retrieval quality of Tandem's knowledge search on a BEIR-layout dataset.

Not a test: it prints figures. From the repo root:

    .venv/bin/python bench/retrieval_quality.py --dataset /path/to/scifact --split test
    .venv/bin/python bench/retrieval_quality.py --dataset /path/to/stackfaq --limit-corpus 50

The dataset folder holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
Everything goes through the real code paths:

1. a fresh database ``tandem_bench_<random>`` is created on the configured PostgreSQL server
   (the embedded one unless ``DATABASE_URL`` is set) and migrated; it is dropped at the end
   unless ``--keep`` is given (``--reuse NAME`` later skips creation and ingestion);
2. each corpus row becomes one document (``# title`` + text) in a customer-visible collection,
   ingested by ``knowledge.services.document_ingest_markdown``;
3. each query of the split runs through ``knowledge.selectors.chunk_search`` in the modes
   lexical, dense and hybrid with ``k=10`` chunks; chunks map back to corpus ids, and only the
   first chunk of a document counts (later chunks of the same document are dropped, so a
   ranking may hold fewer than 10 documents, as the answer pipeline would see it);
4. nDCG@10 and recall@10 per mode are printed (binary or graded qrels, linear gain, as
   pytrec_eval/BEIR compute them), with ingestion time and query latency.

The output ends with exactly one line per mode::

    lexical ndcg@10=0.xxx recall@10=0.xxx
    dense ndcg@10=0.xxx recall@10=0.xxx
    hybrid ndcg@10=0.xxx recall@10=0.xxx

With ``--limit-corpus N`` only N documents are ingested (all the documents the split's qrels
name, plus a seeded sample of the others): quick, but the figures are better than on the full
corpus because there are fewer distractors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.benchlib import create_database, drop_database, percentile  # noqa: E402

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

MODES = ("lexical", "dense", "hybrid")
TOP_K = 10
# Documents whose chunks are embedded in one batch before the service ingests them one by one.
PREFILL_BATCH = 256


# --- dataset -------------------------------------------------------------------------------


def load_dataset(path: Path, split: str) -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus id -> (title, text), query id -> text, query id -> {corpus id: grade})."""
    corpus: dict[str, tuple[str, str]] = {}
    with open(path / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    with open(path / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        for n, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (n == 0 and not parts[2].lstrip("-").isdigit()):
                continue  # header or blank line
            qid, did, grade = parts[0], parts[1], int(parts[2])
            if grade > 0:
                qrels.setdefault(qid, {})[did] = grade
    queries: dict[str, str] = {}
    with open(path / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in qrels:
                    queries[str(row["_id"])] = row["text"]
    missing = set(qrels) - set(queries)
    if missing:
        print(f"warning: {len(missing)} qrel queries have no text in queries.jsonl; skipped", file=sys.stderr)
        for qid in missing:
            del qrels[qid]
    return corpus, queries, qrels


def limit_corpus(corpus: dict, qrels: dict, limit: int | None, seed: int) -> dict:
    if not limit or limit >= len(corpus):
        return corpus
    judged = {did for rel in qrels.values() for did in rel if did in corpus}
    others = sorted(set(corpus) - judged)
    random.Random(seed).shuffle(others)
    keep = judged | set(others[: max(0, limit - len(judged))])
    return {did: row for did, row in corpus.items() if did in keep}


def slug_for(doc_id: str, taken: set[str]) -> str:
    from django.utils.text import slugify

    slug = slugify(doc_id)[:180]
    if not slug or slug in taken:
        # ids that differ only in case or punctuation would collide once slugified.
        slug = f"{slug}-{hashlib.sha1(doc_id.encode()).hexdigest()[:10]}".lstrip("-")
    taken.add(slug)
    return slug


def markdown_body(title: str, text: str) -> str:
    title = " ".join(title.split())
    return f"# {title}\n\n{text}\n" if title else f"{text}\n"


# --- metrics ----------------------------------------------------------------------------------


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = TOP_K) -> float:
    dcg = sum(relevant.get(did, 0) / math.log2(i + 2) for i, did in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int = TOP_K) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


# --- ingestion ------------------------------------------------------------------------------


def prefill_embeddings(rows: list[tuple[str, str]]) -> None:
    """Embed a batch of documents' chunks in one call so that the service, which embeds one
    document at a time, finds them in the embedding cache. It mirrors the service's chunking
    and embedding text; if those drift apart, the service simply embeds itself (slower, same
    result)."""
    from knowledge.chunking import chunk_markdown, markdown_title
    from knowledge.embeddings import embed_texts

    texts = []
    for slug, body in rows:
        title = markdown_title(body, slug.replace("-", " ").title())
        texts += [f"{title}. {d.section}. {d.text}" for d in chunk_markdown(body)]
    embed_texts(texts)


def ingest(corpus: dict[str, tuple[str, str]], collection_name: str) -> tuple[dict[str, str], float, int]:
    """Ingest every corpus row through the real service. Returns (slug -> corpus id, seconds, chunks)."""
    from knowledge.models import Audience, Chunk
    from knowledge.services import collection_ensure, document_ingest_markdown

    collection = collection_ensure(name=collection_name, audience=Audience.CUSTOMER,
                                   description="retrieval_quality benchmark corpus")
    taken: set[str] = set()
    rows = [(slug_for(did, taken), did, markdown_body(title, text)) for did, (title, text) in corpus.items()]
    slug_to_id = {slug: did for slug, did, _ in rows}
    started = last_print = time.perf_counter()
    skipped = 0
    for start in range(0, len(rows), PREFILL_BATCH):
        batch = rows[start:start + PREFILL_BATCH]
        prefill_embeddings([(slug, body) for slug, _, body in batch])
        for n, (slug, did, body) in enumerate(batch, start=start + 1):
            try:
                document_ingest_markdown(collection=collection, slug=slug, body=body, actor="retrieval-bench")
            except ValueError as exc:  # a corpus row with no text at all
                skipped += 1
                print(f"\nskipped {did}: {exc}", file=sys.stderr)
            now = time.perf_counter()
            if now - last_print >= 2 or n == len(rows):
                last_print = now
                print(f"\ringested {n}/{len(rows)} documents, {n / (now - started):.1f} docs/s", end="",
                      file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return slug_to_id, time.perf_counter() - started, Chunk.objects.filter(document__collection=collection).count()


# --- search ---------------------------------------------------------------------------------


def run_mode(mode: str, queries: dict[str, str], vectors: dict[str, list[float]], pk_to_id: dict[str, str],
             candidates: int | None) -> tuple[dict[str, list[str]], list[float]]:
    from knowledge.selectors import chunk_search

    extra = {"candidates": candidates} if candidates else {}
    runs: dict[str, list[str]] = {}
    latencies: list[float] = []
    for qid, text in queries.items():
        started = time.perf_counter()
        hits = chunk_search(query=text, k=TOP_K, query_vector=vectors[qid], mode=mode, **extra)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked: list[str] = []
        for hit in hits:
            did = pk_to_id.get(hit.document_id)
            if did is not None and did not in ranked:
                ranked.append(did)
        runs[qid] = ranked
    return runs, latencies


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="folder in the BEIR layout")
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv (default: test)")
    parser.add_argument("--limit-corpus", type=int, default=None, metavar="N",
                        help="ingest only N documents (always including every judged one)")
    parser.add_argument("--seed", type=int, default=13, help="seed of the --limit-corpus sample")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database (prints its name)")
    parser.add_argument("--reuse", metavar="NAME", help="search a database kept by an earlier --keep run "
                        "(same dataset and --limit-corpus); skips creation and ingestion, never drops it")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of lexical,dense,hybrid")
    parser.add_argument("--candidates", type=int, default=None,
                        help="candidates per retriever passed to chunk_search (default: its own default)")
    parser.add_argument("--per-query", type=Path, default=None, help="write per-query nDCG@10 per mode as JSON")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES):
        parser.error(f"unknown mode in --modes: {args.modes}")

    corpus, queries, qrels = load_dataset(args.dataset, args.split)
    corpus = limit_corpus(corpus, qrels, args.limit_corpus, args.seed)
    print(f"dataset {args.dataset.name} split={args.split}: {len(corpus)} documents, {len(queries)} queries, "
          f"{sum(len(r) for r in qrels.values())} judgements")

    from django.conf import settings

    db = settings.DATABASES["default"]
    name = args.reuse or f"tandem_bench_{secrets.token_hex(4)}"
    if not args.reuse:
        create_database(db, name)
    # Connections are created lazily from settings, so pointing the default alias at the new
    # database before django.setup() makes every ORM query of this process use it.
    db["NAME"] = name
    created = not args.reuse
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from knowledge.embeddings import embed_texts
        from knowledge.models import Document
        from knowledge.selectors import chunk_search  # noqa: F401  (fail before a long ingestion)

        collection_name = f"bench: {args.dataset.name}"
        taken: set[str] = set()
        if args.reuse:
            slug_to_id = {slug_for(did, taken): did for did in corpus}
            print(f"reusing database {name} (no ingestion)")
        else:
            call_command("migrate", verbosity=0, interactive=False)
            slug_to_id, ingest_s, chunks = ingest(corpus, collection_name)
            print(f"ingestion: {len(corpus)} documents, {chunks} chunks in {ingest_s:.1f} s "
                  f"({len(corpus) / ingest_s:.1f} docs/s)")
            # Autovacuum analyzes a freshly loaded table soon after a bulk load; doing it now
            # gives the planner, and the lexical ranking's term frequencies (pg_stats), the
            # statistics a live database would have, instead of those of an empty table.
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        pk_to_id = {
            str(pk): slug_to_id[slug]
            for pk, slug in Document.objects.filter(collection__name=collection_name).values_list("pk", "slug")
            if slug in slug_to_id
        }

        started = time.perf_counter()
        qids = list(queries)
        vectors = dict(zip(qids, embed_texts([queries[q] for q in qids]), strict=True))
        embed_ms = (time.perf_counter() - started) * 1000 / max(1, len(qids))
        # Queries are embedded up front and passed in, as the answer pipeline does, so the
        # latencies below are the search alone.
        print(f"query embedding: {embed_ms:.1f} ms/query (batched; not part of the search latency below)")

        import knowledge.selectors as selectors

        tunables = ("RRF_K", "HNSW_EF_SEARCH", "DENSE_CLEAR_MARGIN", "LEXICAL_SCORED_SHARE", "LEXICAL_SCORED_ROWS",
                    "LEXICAL_NORMALIZATION")
        print("chunk_search: k=10, candidates=" + (str(args.candidates) if args.candidates else "default") + ", "
              + ", ".join(f"{n}={getattr(selectors, n)}" for n in tunables if hasattr(selectors, n)))
        results: dict[str, tuple[float, float]] = {}
        per_query: dict[str, dict[str, float]] = {}
        for mode in modes:
            run_mode(mode, dict(list(queries.items())[:5]), vectors, pk_to_id, args.candidates)  # warm-up
            runs, latencies = run_mode(mode, queries, vectors, pk_to_id, args.candidates)
            ndcgs = {qid: ndcg_at(runs[qid], qrels[qid]) for qid in qids}
            recalls = [recall_at(runs[qid], qrels[qid]) for qid in qids]
            results[mode] = (statistics.fmean(ndcgs.values()), statistics.fmean(recalls))
            per_query[mode] = ndcgs
            print(f"{mode:8s} search latency p50={percentile(latencies, 50):.1f} ms "
                  f"p95={percentile(latencies, 95):.1f} ms  "
                  f"ndcg@10={results[mode][0]:.4f} recall@10={results[mode][1]:.4f}")
        if args.per_query:
            args.per_query.write_text(json.dumps({"queries": queries, "qrels": qrels, "ndcg": per_query}, indent=1))
        if args.keep and created:
            print(f"kept database {name} (rerun with --reuse {name})")
        for mode in modes:
            print(f"{mode} ndcg@10={results[mode][0]:.3f} recall@10={results[mode][1]:.3f}")
    finally:
        if created and not args.keep:
            drop_database(db, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
