"""Reasoning providers behind one interface; ``provider_for_settings`` picks the configured one."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from convo.providers.base import Provider, ProviderError, ProviderResult, ToolCall


def provider_for_settings() -> Provider:
    if settings.LLM_BASE_URL and settings.LLM_MODEL:
        return _openai_provider(settings.LLM_BASE_URL, settings.LLM_API_KEY or "unset", settings.LLM_MODEL,
                                settings.LLM_TIMEOUT_S, settings.LLM_MAX_TOKENS)
    from convo.providers.offline import OfflineProvider

    return OfflineProvider()


@lru_cache(maxsize=8)
def _openai_provider(base_url: str, api_key: str, model: str, timeout_s: float, max_tokens: int) -> Provider:
    """One client per configuration: building one loads TLS state and opens a new pool."""
    from convo.providers.openai_provider import OpenAIProvider

    return OpenAIProvider(base_url=base_url, api_key=api_key, model=model, timeout_s=timeout_s,
                          max_tokens=max_tokens)


__all__ = ["Provider", "ProviderError", "ProviderResult", "ToolCall", "provider_for_settings"]
