"""Evaluation metrics: pure, deterministic functions (no model, no database).

Every comparison works on *content words*: lower-cased runs of letters and digits, without
the stop words below, single letters, and a plural ``s`` (``returns`` → ``return``), so that
"Refunds take 5 days" and "a refund takes 5 days" share ``refund``, ``5`` and ``day``.

- **Groundedness** of an answer: the share of its sentences (citation markers such as ``[1]``
  removed, sentences without content words ignored) that are *supported* by a cited text. A
  sentence is supported when at least ``SUPPORT_MIN_SHARE`` (60 %) of its distinct content
  words appear in one single cited text. No sentence to judge → ``None``; sentences but no
  cited text → 0.
- **Two replies agree** (``replies_agree``) when their content-word F1 is at least
  ``REPLY_AGREE_MIN_F1`` (0.5), or when both cite the same non-empty set of chunks.
- **Two sides of a case agree** (``sides_agree``): the same decision, the same proposed action
  (name and parameters, or none on both sides), the same intent when the decision is to ask
  for a missing detail, and for answers, replies that agree.
- **A reply meets an expected answer** (``answer_meets_expected``, dataset accuracy) when it
  contains at least ``EXPECTED_MIN_RECALL`` (60 %) of the expected answer's content words:
  recall, so that a correct answer with more context still counts.
- **Summary** (``summary_build``): the shared schema of ``EvaluationRun.summary`` (see the
  function); latency percentiles interpolate linearly between the closest ranks; costs are
  summed as decimals and written as strings.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable

SUPPORT_MIN_SHARE = 0.6
REPLY_AGREE_MIN_F1 = 0.5
EXPECTED_MIN_RECALL = 0.6
ESCALATE = "escalate"

_WORD = re.compile(r"[a-z0-9]+")
_CITATION = re.compile(r"\s*\[\d{1,3}\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
STOP_WORDS = frozenset(
    "a an the and or but if of to in on at for with by from is are was were be been being it its this that these "
    "those i you we they he she my your our their me us him her them do does did done can could would should will "
    "shall may might must how what when where which who whom why there here have has had not no yes so as about "
    "into than then please also just any all some such very more most only own same too out up down off over "
    "under again once each few other both nor".split()
)


def content_words(text: str) -> list[str]:
    """The content words of ``text``, in order (see the module docstring)."""
    words = []
    for word in _WORD.findall((text or "").lower()):
        if word in STOP_WORDS or (len(word) < 2 and not word.isdigit()):
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.append(word)
    return words


def sentences(text: str) -> list[str]:
    """The sentences of an answer, citation markers removed."""
    clean = _CITATION.sub("", text or "")
    return [s.strip() for s in _SENTENCE_END.split(clean) if s and s.strip()]


def groundedness(answer: str, cited_texts: Iterable[str]) -> float | None:
    """The share of the answer's sentences supported by one of the cited texts (0..1)."""
    judged = [set(content_words(s)) for s in sentences(answer)]
    judged = [words for words in judged if words]
    if not judged:
        return None
    sources = [set(content_words(t)) for t in cited_texts if t]
    supported = sum(1 for words in judged
                    if any(len(words & source) >= SUPPORT_MIN_SHARE * len(words) for source in sources))
    return supported / len(judged)


def word_f1(a: str, b: str) -> float:
    """F1 of the two texts' content words (distinct words; 1.0 when both have none)."""
    left, right = set(content_words(a)), set(content_words(b))
    if not left and not right:
        return 1.0
    common = len(left & right)
    if not common:
        return 0.0
    precision, recall = common / len(left), common / len(right)
    return 2 * precision * recall / (precision + recall)


def expected_recall(reply: str, expected: str) -> float:
    """The share of the expected answer's content words that the reply contains."""
    wanted = set(content_words(expected))
    if not wanted:
        return 1.0
    return len(wanted & set(content_words(reply))) / len(wanted)


def answer_meets_expected(reply: str, expected: str) -> bool:
    return expected_recall(reply, expected) >= EXPECTED_MIN_RECALL


def _cited_ids(cited) -> frozenset:
    return frozenset(str(c.get("chunk_id")) for c in cited or [] if isinstance(c, dict) and c.get("chunk_id"))


def replies_agree(a_reply: str, b_reply: str, a_cited=(), b_cited=()) -> bool:
    """Equivalent answers: high content-word overlap, or the same cited chunks."""
    a_ids, b_ids = _cited_ids(a_cited), _cited_ids(b_cited)
    if a_ids and a_ids == b_ids:
        return True
    return word_f1(a_reply, b_reply) >= REPLY_AGREE_MIN_F1


def _normal(value):
    """Parameters compared as a customer would read them: 40 and 40.0 and "40" are one amount,
    and letters ignore case and surrounding space."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            return " ".join(text.lower().split())
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def actions_equal(a: dict | None, b: dict | None) -> bool:
    """The same action with the same parameters, or no action on either side."""
    if not a or not b:
        return not a and not b
    return a.get("name") == b.get("name") and _normal(a.get("params") or {}) == _normal(b.get("params") or {})


def sides_agree(baseline: dict, candidate: dict) -> bool:
    """Whether two outcomes of the same input are equivalent (see the module docstring)."""
    decision = baseline.get("decision")
    if decision != candidate.get("decision"):
        return False
    if not actions_equal(baseline.get("action"), candidate.get("action")):
        return False
    if decision == "clarify" and baseline.get("intent") != candidate.get("intent"):
        return False
    if decision == "answer":
        return replies_agree(baseline.get("reply", ""), candidate.get("reply", ""), baseline.get("cited"),
                             candidate.get("cited"))
    return True


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1), interpolating linearly between the closest ranks."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def _decimal(value) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def side_summary(sides: list[dict]) -> dict:
    """The per-side figures of the summary."""
    grounded = [s["grounded"] for s in sides if s.get("grounded") is not None]
    met = [1.0 if s["met"] else 0.0 for s in sides if s.get("met") is not None]
    latencies = [s["latency_ms"] for s in sides if s.get("latency_ms") is not None]
    cost = sum((_decimal(s.get("cost")) for s in sides), Decimal(0))
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return {
        "groundedness": _round(_mean(grounded)),
        "accuracy": _round(_mean(met)),
        "latency_p50_ms": _round(p50, 1),
        "latency_p95_ms": _round(p95, 1),
        "cost": format(cost.normalize() if cost else Decimal(0), "f"),
        "tokens": int(sum(int(s.get("tokens") or 0) for s in sides)),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summary_build(rows: Iterable[dict]) -> dict:
    """``EvaluationRun.summary`` from a run's results, each ``{"agree", "baseline", "candidate"}``
    (a side: ``decision``, ``action``, ``grounded``, ``met``, ``latency_ms``, ``cost``, ``tokens``):

    ``{"cases", "agreement" (0..1, None without cases), "differing",
    "escalation": {"both", "baseline_only", "candidate_only", "neither"},
    "actions": {"same", "differ", "baseline_only", "candidate_only", "neither"},
    "baseline": {"groundedness", "accuracy", "latency_p50_ms", "latency_p95_ms", "cost", "tokens"},
    "candidate": {...}}``. Accuracy is set only where the cases carry ``met`` (dataset runs)."""
    rows = list(rows)
    escalation = {"both": 0, "baseline_only": 0, "candidate_only": 0, "neither": 0}
    actions = {"same": 0, "differ": 0, "baseline_only": 0, "candidate_only": 0, "neither": 0}
    agreeing = 0
    for row in rows:
        base, cand = row.get("baseline") or {}, row.get("candidate") or {}
        agreeing += bool(row.get("agree"))
        escalation[_both(base.get("decision") == ESCALATE, cand.get("decision") == ESCALATE, "both", "neither")] += 1
        b_action, c_action = base.get("action"), cand.get("action")
        if b_action and c_action:
            actions["same" if actions_equal(b_action, c_action) else "differ"] += 1
        else:
            actions[_both(bool(b_action), bool(c_action), "same", "neither")] += 1
    cases = len(rows)
    return {
        "cases": cases,
        "agreement": round(agreeing / cases, 4) if cases else None,
        "differing": cases - agreeing,
        "escalation": escalation,
        "actions": actions,
        "baseline": side_summary([r.get("baseline") or {} for r in rows]),
        "candidate": side_summary([r.get("candidate") or {} for r in rows]),
    }


def _both(baseline: bool, candidate: bool, both: str, neither: str) -> str:
    if baseline and candidate:
        return both
    if baseline:
        return "baseline_only"
    if candidate:
        return "candidate_only"
    return neither
