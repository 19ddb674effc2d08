"""Reasoning providers behind one interface; ``provider_for_settings`` picks the configured one."""

from __future__ import annotations

from django.conf import settings

from convo.providers.base import Provider, ProviderError, ProviderResult, ToolCall


def provider_for_settings() -> Provider:
    if settings.LLM_BASE_URL and settings.LLM_MODEL:
        from convo.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(base_url=settings.LLM_BASE_URL, api_key=settings.LLM_API_KEY or "unset",
                              model=settings.LLM_MODEL, timeout_s=settings.LLM_TIMEOUT_S,
                              max_tokens=settings.LLM_MAX_TOKENS)
    from convo.providers.offline import OfflineProvider

    return OfflineProvider()


__all__ = ["Provider", "ProviderError", "ProviderResult", "ToolCall", "provider_for_settings"]
