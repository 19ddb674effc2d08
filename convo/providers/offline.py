"""The offline provider: no network, deterministic, extractive.

It answers with the sentences of the retrieved chunks that best match the question (by the
same embedding model as retrieval, plus word overlap), keeps each sentence's citation, and
orders them as they stand in the source so the answer reads naturally."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convo.providers.base import AnswerRequest, ProviderResult
from knowledge.chunking import split_sentences
from knowledge.embeddings import embed_query, embed_texts

_WORD = re.compile(r"[a-z0-9]+")
# Order, ticket and invoice numbers look like "BW-10002" or "INV-2291".
_REFERENCE = re.compile(r"\b[A-Za-z]{2,4}-\d{3,}\b")
_STOP = frozenset(
    "a an the and or but if of to in on at for with by from is are was were be been it its this that these those "
    "i you we they he she my your our their me us do does did can could would should will how what when where "
    "which who why there here have has had not no yes so as about into than then please".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


@dataclass
class _Candidate:
    source_n: int
    source_rank: int
    position: int
    text: str
    score: float = 0.0


class OfflineProvider:
    name = "offline"
    model_name = "extractive-v1"
    endpoint = ""
    max_sentences = 3
    min_score = 0.30

    def __init__(self, *, max_sentences: int | None = None, min_score: float | None = None) -> None:
        # A model version's parameters (``governance.ModelVersion.parameters``) tune the extract.
        if max_sentences is not None:
            self.max_sentences = max(1, int(max_sentences))
        if min_score is not None:
            self.min_score = float(min_score)

    def answer(self, request: AnswerRequest, on_token: Callable[[str], None]) -> ProviderResult:
        started = time.perf_counter()
        curated = next((s for s in request.sources if s["n"] == request.curated_source), None)
        if curated is not None and curated["text"].strip():
            return self._curated(request, curated, on_token, started)
        candidates: list[_Candidate] = []
        for rank, source in enumerate(request.sources[:3]):
            for position, sentence in enumerate(split_sentences(source["text"])):
                if len(sentence) >= 12:
                    candidates.append(_Candidate(source["n"], rank, position, sentence))
        if not candidates:
            return ProviderResult(model_ms=(time.perf_counter() - started) * 1000)
        question_vector = np.asarray(request.question_vector or embed_query(request.question))
        vectors = np.asarray(embed_texts([c.text for c in candidates]))
        similarities = vectors @ question_vector
        question_words = content_words(request.question)
        for candidate, similarity in zip(candidates, similarities):
            overlap = len(question_words & content_words(candidate.text)) / max(1, len(question_words))
            candidate.score = float(similarity) + 0.25 * overlap - 0.03 * candidate.source_rank
        ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
        best = ranked[0]
        if best.score < self.min_score:
            return ProviderResult(model_ms=(time.perf_counter() - started) * 1000)
        chosen = [best]
        for candidate in ranked[1:]:
            if len(chosen) >= self.max_sentences:
                break
            same_source = candidate.source_n == best.source_n
            if candidate.score >= best.score - (0.2 if same_source else 0.08) and candidate.score >= self.min_score:
                if len({c.source_n for c in chosen} | {candidate.source_n}) <= 2:
                    chosen.append(candidate)
        # Lead with the source of the best sentence; keep each source's sentences in order.
        source_order = {}
        for candidate in chosen:
            source_order.setdefault(candidate.source_n, len(source_order))
        chosen.sort(key=lambda c: (source_order[c.source_n], c.position))
        parts: list[str] = []
        for i, candidate in enumerate(chosen):
            last_of_source = i == len(chosen) - 1 or chosen[i + 1].source_n != candidate.source_n
            parts.append(candidate.text + (f" [{candidate.source_n}]" if last_of_source else ""))
        text = " ".join(parts)
        first_token_ms = None
        for word in text.split(" "):
            if first_token_ms is None:
                first_token_ms = (time.perf_counter() - started) * 1000
            on_token(word + " ")
        cited = sorted({c.source_n for c in chosen})
        return ProviderResult(text=text, cited=cited, tokens_in=len(request.question.split()),
                              tokens_out=len(text.split()), model_ms=(time.perf_counter() - started) * 1000,
                              ttft_ms=first_token_ms)

    def _curated(self, request: AnswerRequest, source: dict, on_token, started: float) -> ProviderResult:
        """An agent's answer to this question, word for word (no extract), with its citation."""
        text = f"{source['text'].strip()} [{source['n']}]"
        first_token_ms = (time.perf_counter() - started) * 1000
        words = text.split(" ")
        for i, word in enumerate(words):
            on_token(word if i == len(words) - 1 else word + " ")
        return ProviderResult(text=text, cited=[source["n"]], tokens_in=len(request.question.split()),
                              tokens_out=len(text.split()), model_ms=(time.perf_counter() - started) * 1000,
                              ttft_ms=first_token_ms)


def extractive_summary(*, customer_messages: list[str], reason_label: str, intent: str = "") -> str:
    """A handoff summary built from the customer's own words (no generation)."""
    lines = [f"Reason: {reason_label}."]
    if intent:
        lines.append(f"Detected intent: {intent.replace('_', ' ')}.")
    substantive = [m for m in customer_messages if len(content_words(m)) >= 2] or customer_messages
    if substantive:
        lines.append(f"First asked: \u201c{substantive[0][:300]}\u201d")
        if len(substantive) > 1:
            lines.append(f"Latest: \u201c{substantive[-1][:300]}\u201d")
    ids = sorted({m.upper() for text in customer_messages for m in _REFERENCE.findall(text)})
    if ids:
        lines.append("References mentioned: " + ", ".join(ids) + ".")
    return "\n".join(lines)
