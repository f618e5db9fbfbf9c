"""Which providers and models exist, and what they cost. Data only: no SDK here.

Three layers of providers, later ones adding to (or replacing) earlier ones:
1. built in: ``openai``, ``groq`` (OpenAI-compatible, same SDK), ``sim`` (offline);
2. the operator's BATON_PROVIDERS (any OpenAI-compatible server, for every organization);
3. an organization's integrations (its own servers, or its own key for a provider above).

A ``Catalog`` is one such view. The API validates agent and job settings against the
caller organization's catalog (an unknown provider/model is a 422 at submission);
workers/providers/ builds SDK clients from it and prices every call with it.
Prices are USD per 1M tokens, overridable with BATON_PROVIDERS' ``prices`` and
BATON_PRICE_TABLE (JSON or a file path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from baton.settings import ConfiguredProvider, get_settings
from orchestration.errors import field_error

SIM_MODELS = (
    "echo", "slow", "flaky", "error", "timeout", "malformed", "slow-stream", "cut-stream",
    "tool-loop",  # offered tools, calls one on every turn: a model that never stops
)  # fmt: skip


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    base_url: str
    key_env: str | None  # environment variable holding the key; None: no key needed
    models: tuple[str, ...]
    timeout_seconds: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)
    prices: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # by bare model
    # The organization that defined this provider (its integration); None: operator-wide.
    owner: str | None = None


BUILTIN_PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec(
        "openai", "https://api.openai.com/v1", "OPENAI_API_KEY",
        ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-4.1", "gpt-4.1-mini", "o3-mini"),
    ),
    "groq": ProviderSpec(
        "groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY",
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

# Models of comparable capability on different providers: where a step falls back to
# when the agent names no fallback model for the next provider (seed 000: OpenAI -> Groq).
EQUIVALENT_MODELS: tuple[tuple[str, ...], ...] = (
    (
        "openai/gpt-4o", "openai/gpt-4.1", "openai/gpt-4-turbo", "openai/gpt-4", "openai/o3-mini",
        "groq/llama-3.3-70b-versatile", "groq/llama-3.1-70b",
    ),
    ("openai/gpt-4o-mini", "openai/gpt-4.1-mini", "groq/llama-3.1-8b-instant", "groq/mixtral-8x7b"),
)  # fmt: skip

DEFAULT_SIM_MODEL = "sim/echo"
PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ResolvedModel:
    provider: str
    model: str  # the provider's own model name (no "provider/" prefix)

    @property
    def qualified(self) -> str:
        return f"{self.provider}/{self.model}"


def _configured_spec(entry: ConfiguredProvider) -> ProviderSpec:
    extra = {"max_tokens_param": entry.max_tokens_param} if entry.max_tokens_param else {}
    return ProviderSpec(
        entry.name, entry.base_url, entry.api_key_env, entry.models, entry.timeout_seconds,
        extra, dict(entry.prices),
    )  # fmt: skip


def providers() -> dict[str, ProviderSpec]:
    """The operator's providers: built in, then BATON_PROVIDERS (which may replace one)."""
    specs = dict(BUILTIN_PROVIDERS)
    for entry in get_settings().configured_providers:
        specs[entry.name] = _configured_spec(entry)
    return specs


class Catalog:
    """One organization's (or the operator's) view of providers, models and prices."""

    def __init__(self, specs: Mapping[str, ProviderSpec] | None = None) -> None:
        self.specs: dict[str, ProviderSpec] = dict(specs) if specs is not None else providers()

    def __contains__(self, provider: str) -> bool:
        return provider in self.specs

    def resolve(self, name: str, preferred_providers: list[str] | None = None) -> ResolvedModel:
        """``provider/model`` picks the provider; a bare model is looked up in the registry
        (the first of ``preferred_providers`` that serves it, else the first that does)."""
        if "/" in name:
            provider, model = name.split("/", 1)
            spec = self.specs.get(provider)
            if spec is not None and model in spec.models:
                return ResolvedModel(provider, model)
            if spec is not None and name not in self._all_models():
                raise field_error("model", f"provider '{provider}' has no model '{model}'")
        candidates = [p for p in self.specs.values() if name in p.models]
        if not candidates:
            raise field_error("model", f"unknown model '{name}'")
        for preferred in preferred_providers or []:
            for spec in candidates:
                if spec.name == preferred:
                    return ResolvedModel(spec.name, name)
        return ResolvedModel(candidates[0].name, name)

    def _all_models(self) -> set[str]:
        return {m for spec in self.specs.values() for m in spec.models}

    def validate_provider(self, name: str, field_name: str = "providers") -> None:
        if name not in self.specs:
            known = ", ".join(sorted(self.specs))
            raise field_error(field_name, f"unknown provider '{name}'; known: {known}")

    def price_for(self, resolved: ResolvedModel) -> dict[str, Decimal]:
        """The provider's own price for the model, then the price table (qualified name,
        then bare name), then BATON_DEFAULT_PRICE; else a 422."""
        settings = get_settings()
        spec = self.specs.get(resolved.provider)
        if spec is not None and resolved.model in spec.prices:
            return spec.prices[resolved.model]
        table = {**BUILTIN_PRICES, **settings.price_table}
        for key in (resolved.qualified, resolved.model):
            if key in table:
                return table[key]
        if settings.default_price:
            return settings.default_price
        raise field_error("model", f"model '{resolved.qualified}' has no price configured")

    def cost_of(
        self, resolved: ResolvedModel, prompt_tokens: int, completion_tokens: int
    ) -> Decimal:
        price = self.price_for(resolved)
        return (
            Decimal(prompt_tokens) * price["input"] + Decimal(completion_tokens) * price["output"]
        ) / PER_MILLION

    def fallback_model(
        self, primary: ResolvedModel, provider: str, fallback_models: Mapping[str, str]
    ) -> ResolvedModel:
        """The model a step uses on ``provider`` when ``primary`` cannot answer: the agent's
        ``fallback_models[provider]``, else the same model if the provider serves it, else
        the catalog's equivalent, else the provider's first (default) model."""
        spec = self.specs[provider]
        if named := fallback_models.get(provider):
            return self.resolve(named if "/" in named else f"{provider}/{named}")
        if primary.model in spec.models:
            return ResolvedModel(provider, primary.model)
        for group in EQUIVALENT_MODELS:
            if primary.qualified in group:
                for qualified in group:
                    target, _, model = qualified.partition("/")
                    if target == provider and model in spec.models:
                        return ResolvedModel(provider, model)
        return ResolvedModel(provider, spec.models[0])

    def candidates(
        self,
        primary: ResolvedModel,
        providers_order: list[str],
        fallback_models: Mapping[str, str] | None = None,
    ) -> list[ResolvedModel]:
        """The primary, then one model on every other provider of the ordered list."""
        chain = [primary]
        for provider in providers_order:
            if provider == primary.provider or provider not in self.specs:
                continue
            chain.append(self.fallback_model(primary, provider, fallback_models or {}))
        return chain

    def default_model(self) -> str:
        """BATON_DEFAULT_MODEL, else the default provider's first model; ``sim`` with no keys."""
        settings = get_settings()
        if settings.default_model:
            return settings.default_model
        provider = settings.default_provider
        if not provider:
            provider = (
                "openai" if settings.openai_api_key else "groq" if settings.groq_api_key else "sim"
            )
        spec = self.specs.get(provider) or BUILTIN_PROVIDERS["sim"]
        return f"{spec.name}/{spec.models[0]}"


def operator_catalog() -> Catalog:
    return Catalog()


# Module-level shortcuts over the operator's catalog (no organization in scope).


def resolve_model(name: str, preferred_providers: list[str] | None = None) -> ResolvedModel:
    return operator_catalog().resolve(name, preferred_providers)


def validate_provider(name: str, field_name: str = "providers") -> None:
    operator_catalog().validate_provider(name, field_name)


def price_for(resolved: ResolvedModel) -> dict[str, Decimal]:
    return operator_catalog().price_for(resolved)


def cost_of(resolved: ResolvedModel, prompt_tokens: int, completion_tokens: int) -> Decimal:
    return operator_catalog().cost_of(resolved, prompt_tokens, completion_tokens)


def default_model() -> str:
    return operator_catalog().default_model()


@dataclass(frozen=True)
class ProviderContext:
    """What a provider call needs to know about the organization it is made for.

    ``keys`` hold decrypted integration keys (they win over the environment's); a key
    that is stored but cannot be used is in ``key_problems`` with the reason. Providers
    in ``org_scoped`` (the organization's own server or own key) get their own circuit
    breaker: one tenant's rate limit or bad endpoint does not open the breaker for all.
    """

    catalog: Catalog
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    key_problems: Mapping[str, str] = field(default_factory=dict)
    org_scoped: frozenset[str] = frozenset()
    organization_id: str | None = None

    def breaker_scope(self, provider: str) -> str:
        if provider in self.org_scoped and self.organization_id:
            return f"org:{self.organization_id}"
        return "global"
