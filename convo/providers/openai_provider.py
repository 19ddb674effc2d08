"""Any OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM) through the
``openai`` package: streamed chat completions with the action catalogue offered as tools."""

from __future__ import annotations

import json
import re
import time
from typing import Callable

import openai

from convo.providers.base import AnswerRequest, ProviderError, ProviderResult, ToolCall

_CITATION = re.compile(r"\[(\d{1,2})\]")


def format_sources(sources: list[dict], *, curated: int | None = None) -> str:
    """The numbered sources for the system prompt. ``curated`` is the number of a curated answer
    to this very question: it comes first, with an instruction to answer with it."""
    if not sources:
        return "(no sources found)"
    ordered = sorted(sources, key=lambda s: s["n"] != curated)
    parts = []
    if curated is not None and ordered[0]["n"] == curated:
        parts.append(f"Source [{curated}] is the answer our team wrote to this question. Prefer it: answer with "
                     f"it, keeping its facts and wording, and cite [{curated}]. Use the other sources only for "
                     f"what it does not cover.")
    for s in ordered:
        if s.get("curated"):
            parts.append(f"[{s['n']}] Curated answer to the question \u201c{s['title']}\u201d\n{s['text']}")
        else:
            parts.append(f"[{s['n']}] {s['title']} — {s['section']}\n{s['text']}")
    return "\n\n".join(parts)


class OpenAIProvider:
    name = "openai"

    def __init__(self, *, base_url: str, api_key: str, model: str, timeout_s: float, max_tokens: int,
                 temperature: float = 0.2, http_client=None):
        self.model_name = model
        self.endpoint = base_url
        self.max_tokens = max_tokens
        self.temperature = temperature
        kwargs = {"base_url": base_url, "api_key": api_key, "timeout": timeout_s, "max_retries": 1}
        if http_client is not None:
            kwargs["http_client"] = http_client
        self.client = openai.OpenAI(**kwargs)

    def answer(self, request: AnswerRequest, on_token: Callable[[str], None]) -> ProviderResult:
        messages = [{"role": "system", "content": request.system_prompt}]
        messages += request.history[-8:]
        messages.append({"role": "user", "content": request.question})
        params = {"model": self.model_name, "messages": messages, "stream": True, "max_tokens": self.max_tokens,
                  "temperature": self.temperature, "stream_options": {"include_usage": True}}
        if request.tools:
            params["tools"] = request.tools
        started = time.perf_counter()
        ttft_ms = None
        text_parts: list[str] = []
        tool_name, tool_args, usage = "", [], None
        try:
            stream = self.client.chat.completions.create(**params)
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta is None:
                    continue
                if delta.content:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    text_parts.append(delta.content)
                    on_token(delta.content)
                for call in delta.tool_calls or []:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    if call.function and call.function.name:
                        tool_name = call.function.name
                    if call.function and call.function.arguments:
                        tool_args.append(call.function.arguments)
        except openai.APITimeoutError as exc:
            raise ProviderError("the model did not answer in time", kind="timeout") from exc
        except openai.APIStatusError as exc:
            raise ProviderError(f"the model endpoint returned HTTP {exc.status_code}", kind="http_error") from exc
        except openai.APIError as exc:
            raise ProviderError(f"the model endpoint failed: {exc.__class__.__name__}", kind="connection") from exc
        model_ms = (time.perf_counter() - started) * 1000
        text = "".join(text_parts).strip()
        tool_call = None
        if tool_name:
            raw = "".join(tool_args)
            try:
                arguments = json.loads(raw or "{}")
            except json.JSONDecodeError as exc:
                raise ProviderError("the model proposed an action with malformed arguments", kind="bad_output") from exc
            if not isinstance(arguments, dict):
                raise ProviderError("the model proposed an action with malformed arguments", kind="bad_output")
            tool_call = ToolCall(name=tool_name, arguments=arguments, raw_arguments=raw)
        valid = {s["n"] for s in request.sources}
        cited = sorted({int(n) for n in _CITATION.findall(text) if int(n) in valid})
        return ProviderResult(
            text=text, cited=cited, tool_call=tool_call,
            tokens_in=getattr(usage, "prompt_tokens", 0) or 0, tokens_out=getattr(usage, "completion_tokens", 0) or 0,
            model_ms=model_ms, ttft_ms=ttft_ms,
        )
