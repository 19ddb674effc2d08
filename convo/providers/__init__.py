"""Reasoning providers behind one interface.

``provider_for_version`` builds the provider a model version describes (what answers turns);
``provider_for_settings`` is the runtime configured by the environment, registered as the first
active model version on first use (``governance.routing.runtime_register``)."""

from __future__ import annotations

import os
from functools import lru_cache

from django.conf import settings

from convo.providers.base import Provider, ProviderError, ProviderResult, ToolCall


def provider_for_settings() -> Provider:
    if settings.LLM_BASE_URL and settings.LLM_MODEL:
        return _openai_provider(settings.LLM_BASE_URL, settings.LLM_API_KEY or "unset", settings.LLM_MODEL,
                                settings.LLM_TIMEOUT_S, settings.LLM_MAX_TOKENS)
    from convo.providers.offline import OfflineProvider

    return OfflineProvider()


def provider_for_version(model_version) -> Provider:
    """The provider of a ``governance.ModelVersion``; its key comes from the environment only."""
    params = model_version.parameters or {}
    if model_version.provider == "openai":
        api_key = os.environ.get(model_version.api_key_env or "", "") or settings.LLM_API_KEY or "unset"
        return _openai_provider(model_version.endpoint, api_key, model_version.model_name,
                                float(params.get("timeout_s", settings.LLM_TIMEOUT_S)),
                                int(params.get("max_tokens", settings.LLM_MAX_TOKENS)),
                                float(params.get("temperature", 0.2)))
    from convo.providers.offline import OfflineProvider

    return OfflineProvider(max_sentences=params.get("max_sentences"), min_score=params.get("min_score"))


@lru_cache(maxsize=8)
def _openai_provider(base_url: str, api_key: str, model: str, timeout_s: float, max_tokens: int,
                     temperature: float = 0.2) -> Provider:
    """One client per configuration: building one loads TLS state and opens a new pool."""
    from convo.providers.openai_provider import OpenAIProvider

    return OpenAIProvider(base_url=base_url, api_key=api_key, model=model, timeout_s=timeout_s,
                          max_tokens=max_tokens, temperature=temperature)


__all__ = ["Provider", "ProviderError", "ProviderResult", "ToolCall", "provider_for_settings", "provider_for_version"]
