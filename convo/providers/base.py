"""The provider interface: given the question, history and sources, produce an answer with
citations or a proposed tool call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


class ProviderError(Exception):
    """The model could not answer (timeout, HTTP error, malformed output)."""

    def __init__(self, message: str, *, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict
    raw_arguments: str = ""


@dataclass
class ProviderResult:
    text: str = ""
    cited: list[int] = field(default_factory=list)
    tool_call: ToolCall | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    model_ms: float = 0.0
    ttft_ms: float | None = None


@dataclass(frozen=True)
class AnswerRequest:
    question: str
    history: list[dict]  # [{"role": "user"|"assistant", "content": str}], oldest first
    sources: list[dict]  # [{"n", "title", "section", "text", "similarity"}]
    system_prompt: str
    tools: list[dict]  # OpenAI tool specs; empty when actions are routed by intent
    question_vector: list[float] | None = None
    # The number ``n`` of a source that is a curated answer to this very question (an agent
    # wrote it): answer with it. Its ``text`` is the whole answer.
    curated_source: int | None = None


class Provider(Protocol):
    name: str
    model_name: str
    endpoint: str

    def answer(self, request: AnswerRequest, on_token: Callable[[str], None]) -> ProviderResult: ...
