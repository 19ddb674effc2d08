"""Input guards: PII detection and redaction, and a prompt-injection screen.

Deterministic rules, so a verdict can be explained and replayed. Redaction happens before
any text leaves the process for an external model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,3})?\b")),
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,19}\b")),
    ("PHONE", re.compile(r"(?<![\w-])\+?\d[\d ()-]{7,}\d(?![\w-])")),
]

_INJECTION = re.compile(
    r"(ignore|disregard|forget)\s+(all\s+|any\s+|the\s+|your\s+)?(previous|prior|above|earlier)?\s*(instructions|rules|prompts?)"
    r"|(reveal|show|print|repeat)\s+(me\s+)?(your|the)\s+(system\s+)?(prompt|instructions)"
    r"|you\s+are\s+now\s+(in\s+)?(developer|dan|jailbreak)"
    r"|\bjailbreak\b|\bdeveloper\s+mode\b|</?system>",
    re.IGNORECASE,
)


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass
class GuardVerdict:
    pii: list[str] = field(default_factory=list)
    injection: bool = False
    redacted: str = ""

    def as_dict(self) -> dict:
        return {"pii": self.pii, "injection": self.injection}


def pii_redact(text: str) -> tuple[str, list[str]]:
    """Replace personal data with ``[KIND]`` placeholders; returns (text, kinds found)."""
    found: list[str] = []

    for kind, pattern in _PATTERNS:
        def replace(m: re.Match, kind=kind) -> str:
            if kind == "CARD":
                digits = re.sub(r"\D", "", m.group(0))
                if not (13 <= len(digits) <= 19 and _luhn_ok(digits)):
                    return m.group(0)
            found.append(kind)
            return f"[{kind}]"

        text = pattern.sub(replace, text)
    return text, sorted(set(found))


def screen(text: str) -> GuardVerdict:
    redacted, kinds = pii_redact(text)
    return GuardVerdict(pii=kinds, injection=bool(_INJECTION.search(text)), redacted=redacted)
