"""OpenAI-compatible providers registered in this process, beside the operator's."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from orchestration import model_catalog
from orchestration.model_catalog import ProviderSpec

_registry: dict[str, ProviderSpec] = {}
_registry_lock = threading.Lock()


def register_provider(spec: ProviderSpec) -> None:
    """Add (or replace) an OpenAI-compatible provider for this process."""
    with _registry_lock:
        _registry[spec.name] = spec


def provider_specs(extra: Mapping[str, ProviderSpec] | None = None) -> dict[str, ProviderSpec]:
    """Operator providers, then registered ones, then ``extra`` (later wins)."""
    with _registry_lock:
        return {**model_catalog.providers(), **_registry, **(extra or {})}
