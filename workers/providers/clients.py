"""One ``openai.OpenAI`` client per provider, per process.

The SDK's own retries are off (``max_retries=0``) and its 10-minute default timeout is
replaced by the provider's: Baton's retry loop, which sees every attempt, is the only one.
"""

from __future__ import annotations

import hashlib
import os
import threading

import httpx
import openai

from baton.settings import get_settings
from orchestration import egress
from orchestration.model_catalog import ProviderContext, ProviderSpec
from workers.providers.errors import ProviderError
from workers.providers.sim import SimTransport

# A keyless provider still gets a placeholder: given None, the SDK would read
# OPENAI_API_KEY itself and send the OpenAI key to whatever server this is.
NO_KEY = "no-key-required"

# Clients for organizations' own keys and servers accumulate; past this many the cache is
# emptied (a client is cheap to build again; its pool is not worth keeping for long).
MAX_CLIENTS = 256

_clients: dict[tuple[str, str, str], openai.OpenAI] = {}
_lock = threading.Lock()
_pid = os.getpid()


def api_key_for(spec: ProviderSpec, context: ProviderContext | None = None) -> str:
    """The organization's own key (an integration) first, then the environment's."""
    if context is not None:
        if problem := context.key_problems.get(spec.name):
            raise ProviderError("missing_api_key", problem, provider=spec.name)
        if key := context.keys.get(spec.name):
            return key
    if spec.key_env is None:
        return NO_KEY
    key = get_settings().provider_key(spec.key_env)
    if not key:
        raise ProviderError(
            "missing_api_key",
            f"provider '{spec.name}' needs an API key: set {spec.key_env.upper()} "
            f"or add the organization's key as an integration",
            retryable=False,
            provider=spec.name,
        )
    return key


def secrets_for(spec: ProviderSpec, context: ProviderContext | None = None) -> tuple[str, ...]:
    """Every key Baton knows of, for redaction (a server may echo any of them)."""
    keys = set(get_settings().provider_keys.values())
    if context is not None:
        keys.update(context.keys.values())
    return tuple(k for k in keys if k)


def get_client(spec: ProviderSpec, context: ProviderContext | None = None) -> openai.OpenAI:
    key = api_key_for(spec, context)
    # The key's fingerprint is part of the cache key so a rotated key gets a new client;
    # the key itself never becomes a dict key that could end up in a repr.
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache_key = (spec.name, spec.base_url, fingerprint)
    global _pid
    with _lock:
        if _pid != os.getpid():
            # A forked child (Celery prefork) must not share its parent's connection pools.
            _clients.clear()
            _pid = os.getpid()
        client = _clients.get(cache_key)
        if client is None:
            if len(_clients) >= MAX_CLIENTS:
                _clients.clear()  # dropped clients close their pools when collected
            client = _clients[cache_key] = _build(spec, key)
        return client


def _build(spec: ProviderSpec, key: str) -> openai.OpenAI:
    http_client: httpx.Client | None = None
    if spec.name == "sim":
        http_client = httpx.Client(transport=SimTransport())
    elif spec.owner is not None:
        # An organization's own server: every request is checked and pinned to the address
        # it resolved to, redirects are not followed (the operator's providers are trusted).
        http_client = egress.pinned_client(timeout=spec.timeout_seconds)
    return openai.OpenAI(
        api_key=key,
        base_url=spec.base_url,
        max_retries=0,
        timeout=spec.timeout_seconds,
        http_client=http_client,
    )
