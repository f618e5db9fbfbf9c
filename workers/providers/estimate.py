"""Token counts Baton makes itself: the worst case the budget reserves before a call, and
the charge of a stream cut off before the provider reported its usage."""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache
from typing import Any

import bpe_openai

from orchestration import model_catalog
from orchestration.model_catalog import Catalog, ResolvedModel
from workers.providers import sim

# Real tokenizers average about four characters a token on English, fewer on code and
# other scripts: three keeps the estimate above the real count in practice.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4


def estimate_prompt_tokens(provider: str, messages: list[dict[str, Any]]) -> int:
    if provider == "sim":  # exactly what the sim server will report
        return max(
            1, sim.count_tokens("".join(sim.message_text(m.get("content")) for m in messages))
        )
    return sum(
        math.ceil(len(sim.message_text(m.get("content"))) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE
        for m in messages
    )


@lru_cache(maxsize=64)
def _tokenizer(model: str) -> Any:
    """OpenAI's own tokenizer for a model that has one (its tables ship in the package, so
    this works offline), else None."""
    try:
        return bpe_openai.encoding_for_model(model.rsplit("/", 1)[-1])
    except (KeyError, bpe_openai.UnsupportedModelError):
        return None


def count_message_tokens(provider: str, model: str, message: dict[str, Any]) -> int:
    """One chat message's tokens: counted with the model's real tokenizer where it has one
    (OpenAI's models), exactly for ``sim``, else estimated like the budget's reserve."""
    tokenizer = None if provider == "sim" else _tokenizer(model)
    if tokenizer is None:
        return estimate_prompt_tokens(provider, [message])
    text = sim.message_text(message.get("content"))
    return len(tokenizer.encode_ordinary(text)) + TOKENS_PER_MESSAGE


def estimate_completion_tokens(provider: str, text: str) -> int:
    """Tokens of (partial) output text, counted like the prompt: exact for ``sim``."""
    if provider == "sim":
        return sim.count_tokens(text)
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def worst_case_cost(
    *,
    model: str | ResolvedModel,
    providers: list[str],
    messages: list[dict[str, Any]],
    max_tokens: int,
    catalog: Catalog | None = None,
) -> Decimal:
    """Prompt tokens counted plus ``max_tokens`` of output, at the model's price."""
    catalog = catalog or model_catalog.operator_catalog()
    resolved = model if isinstance(model, ResolvedModel) else catalog.resolve(model, providers)
    prompt = estimate_prompt_tokens(resolved.provider, messages)
    return catalog.cost_of(resolved, prompt, max_tokens)
