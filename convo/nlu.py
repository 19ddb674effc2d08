"""Intent recognition by similarity to example phrases, and parameter extraction."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgvector.django import CosineDistance

from convo.models import IntentExample


@dataclass(frozen=True)
class IntentMatch:
    name: str
    kind: str
    action_name: str
    confidence: float
    example: str


def intent_classify(*, vector: list[float], k: int = 5) -> IntentMatch | None:
    """The intent of the nearest example phrase; confidence is its cosine similarity."""
    rows = list(
        IntentExample.objects.annotate(distance=CosineDistance("embedding", vector))
        .order_by("distance")
        .values("intent__name", "intent__kind", "intent__action_name", "text", "distance")[:k]
    )
    if not rows:
        return None
    best = rows[0]
    return IntentMatch(name=best["intent__name"], kind=best["intent__kind"], action_name=best["intent__action_name"],
                       confidence=round(1.0 - float(best["distance"]), 4), example=best["text"])


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_AMOUNT = re.compile(
    r"(?:(?:€|EUR|eur|euros?|\$|USD)\s*(\d+(?:[.,]\d{1,2})?))|(?:(\d+(?:[.,]\d{1,2})?)\s*(?:€|EUR|eur|euros?|\$|USD|dollars?))"
)
_NUMBER = re.compile(r"(?<![\w-])(\d+(?:[.,]\d{1,2})?)(?![\w-])")


def _schema_pattern(schema: dict) -> re.Pattern | None:
    pattern = schema.get("pattern")
    if not pattern:
        return None
    return re.compile(pattern.lstrip("^").rstrip("$"), re.IGNORECASE)


def extract_params(*, schema: dict, text: str, asked: str = "") -> dict:
    """Fill what can be read from ``text`` for an action's JSON Schema.

    Patterned and e-mail fields are matched first and removed from the text, so that an
    order number is not mistaken for an amount. A free-text field is filled with the whole
    message only when it is the field the assistant just asked for."""
    props: dict = schema.get("properties", {})
    found: dict = {}
    rest = text
    for name, spec in props.items():
        regex = _schema_pattern(spec) or (_EMAIL if spec.get("format") == "email" else None)
        if regex is None:
            continue
        m = regex.search(rest)
        if m:
            value = m.group(0)
            found[name] = value.upper() if spec.get("pattern", "").startswith("^BW") else value
            rest = rest[: m.start()] + " " + rest[m.end():]
    for name, spec in props.items():
        if name in found or spec.get("type") not in ("number", "integer"):
            continue
        m = _AMOUNT.search(rest) or (_NUMBER.search(rest) if asked == name else None)
        if m:
            raw = next(g for g in m.groups() if g)
            value = float(raw.replace(",", "."))
            found[name] = int(value) if spec.get("type") == "integer" else value
    for name, spec in props.items():
        if name in found or spec.get("type") != "string" or spec.get("pattern") or spec.get("format"):
            continue
        if asked == name:
            found[name] = text.strip()
    return found


def missing_params(*, schema: dict, params: dict) -> list[str]:
    return [name for name in schema.get("required", []) if name not in params]
