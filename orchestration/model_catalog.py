"""Which providers and models exist, and what they cost. Data only: no SDK here.

The API validates agent and job settings against it (an unknown provider/model is a 422 at
submission); workers/providers/ builds SDK clients from it and prices every call with it.
Prices are USD per 1M tokens, overridable with BATON_PRICE_TABLE (JSON or a file path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from baton.settings import get_settings
from orchestration.errors import field_error

SIM_MODELS = ("echo", "slow", "flaky", "error", "timeout", "malformed")


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    base_url: str
    key_env: str | None  # settings attribute holding the key; None: no key needed
    models: tuple[str, ...]
    timeout_seconds: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec(
        "openai", "https://api.openai.com/v1", "openai_api_key",
        ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-4.1", "gpt-4.1-mini", "o3-mini"),
    ),
    "groq": ProviderSpec(
        "groq", "https://api.groq.com/openai/v1", "groq_api_key",
        ("llama-3.1-70b", "llama-3.1-8b-instant", "llama-3.3-70b-versatile", "mixtral-8x7b"),
    ),
    "sim": ProviderSpec("sim", "http://sim.baton.invalid/v1", None, SIM_MODELS),
}  # fmt: skip

# USD per 1M tokens.
BUILTIN_PRICES: dict[str, dict[str, Decimal]] = {
    "gpt-4o": {"input": Decimal("2.50"), "output": Decimal("10.00")},
    "gpt-4o-mini": {"input": Decimal("0.15"), "output": Decimal("0.60")},
    "gpt-4-turbo": {"input": Decimal("10.00"), "output": Decimal("30.00")},
    "gpt-4": {"input": Decimal("30.00"), "output": Decimal("60.00")},
    "gpt-4.1": {"input": Decimal("2.00"), "output": Decimal("8.00")},
    "gpt-4.1-mini": {"input": Decimal("0.40"), "output": Decimal("1.60")},
    "o3-mini": {"input": Decimal("1.10"), "output": Decimal("4.40")},
    "llama-3.1-70b": {"input": Decimal("0.59"), "output": Decimal("0.79")},
    "llama-3.3-70b-versatile": {"input": Decimal("0.59"), "output": Decimal("0.79")},
    "llama-3.1-8b-instant": {"input": Decimal("0.05"), "output": Decimal("0.08")},
    "mixtral-8x7b": {"input": Decimal("0.24"), "output": Decimal("0.24")},
    # The simulated provider is priced like a small real model so budgets are exercised.
    **{f"sim/{m}": {"input": Decimal("0.50"), "output": Decimal("1.50")} for m in SIM_MODELS},
}

DEFAULT_SIM_MODEL = "sim/echo"
PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ResolvedModel:
    provider: str
    model: str  # the provider's own model name (no "provider/" prefix)

    @property
    def qualified(self) -> str:
        return f"{self.provider}/{self.model}"


def providers() -> dict[str, ProviderSpec]:
    return dict(BUILTIN_PROVIDERS)


def resolve_model(name: str, preferred_providers: list[str] | None = None) -> ResolvedModel:
    """``provider/model`` picks the provider; a bare model is looked up in the registry."""
    specs = providers()
    if "/" in name:
        provider, model = name.split("/", 1)
        if provider in specs and model in specs[provider].models:
            return ResolvedModel(provider, model)
        if provider in specs:
            raise field_error("model", f"provider '{provider}' has no model '{model}'")
    candidates = [p for p in specs.values() if name in p.models]
    if not candidates:
        raise field_error("model", f"unknown model '{name}'")
    for preferred in preferred_providers or []:
        for spec in candidates:
            if spec.name == preferred:
                return ResolvedModel(spec.name, name)
    return ResolvedModel(candidates[0].name, name)


def validate_provider(name: str, field_name: str = "providers") -> None:
    if name not in providers():
        raise field_error(
            field_name, f"unknown provider '{name}'; known: {', '.join(sorted(providers()))}"
        )


def price_for(resolved: ResolvedModel) -> dict[str, Decimal]:
    settings = get_settings()
    table = {**BUILTIN_PRICES, **settings.price_table}
    for key in (resolved.qualified, resolved.model):
        if key in table:
            return table[key]
    if settings.default_price:
        return settings.default_price
    raise field_error("model", f"model '{resolved.qualified}' has no price configured")


def cost_of(resolved: ResolvedModel, prompt_tokens: int, completion_tokens: int) -> Decimal:
    price = price_for(resolved)
    return (
        Decimal(prompt_tokens) * price["input"] + Decimal(completion_tokens) * price["output"]
    ) / PER_MILLION


def default_model() -> str:
    """BATON_DEFAULT_MODEL, else the default provider's first model; ``sim`` with no keys."""
    settings = get_settings()
    if settings.default_model:
        return settings.default_model
    provider = settings.default_provider
    if not provider:
        provider = (
            "openai" if settings.openai_api_key else "groq" if settings.groq_api_key else "sim"
        )
    spec = providers().get(provider) or BUILTIN_PROVIDERS["sim"]
    return f"{spec.name}/{spec.models[0]}"
