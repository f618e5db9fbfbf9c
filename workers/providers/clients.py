"""One ``openai.OpenAI`` client per provider and process, with the SDK's own retries off."""

from __future__ import annotations

import threading

import httpx
import openai

from baton.settings import get_settings
from orchestration.model_catalog import ProviderSpec
from workers.providers.errors import ProviderError
from workers.providers.sim import SimTransport

_clients: dict[tuple[str, str], openai.OpenAI] = {}
_lock = threading.Lock()


def api_key_for(spec: ProviderSpec) -> str:
    if spec.key_env is None:
        return "sim-no-key"
    key = getattr(get_settings(), spec.key_env, "") or ""
    if not key:
        raise ProviderError(
            "missing_api_key",
            f"no API key is configured for provider '{spec.name}' (set {spec.key_env.upper()})",
            retryable=False,
            provider=spec.name,
        )
    return key


def client_for(spec: ProviderSpec) -> openai.OpenAI:
    """Baton's retry loop is the only one: ``max_retries=0``; timeouts are set per call."""
    cache_key = (spec.name, spec.base_url)
    with _lock:
        client = _clients.get(cache_key)
        if client is None:
            http_client = httpx.Client(transport=SimTransport()) if spec.name == "sim" else None
            client = openai.OpenAI(
                api_key=api_key_for(spec),
                base_url=spec.base_url,
                max_retries=0,
                timeout=spec.timeout_seconds,
                http_client=http_client,
            )
            _clients[cache_key] = client
        return client


def reset_clients() -> None:
    with _lock:
        _clients.clear()
