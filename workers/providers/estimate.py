"""Worst-case cost of a call before it is made: what the budget reservation holds."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from orchestration import model_catalog
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


def worst_case_cost(
    *, model: str, providers: list[str], messages: list[dict[str, Any]], max_tokens: int
) -> Decimal:
    """Prompt tokens counted plus ``max_tokens`` of output, at the model's price."""
    resolved = model_catalog.resolve_model(model, providers)
    prompt = estimate_prompt_tokens(resolved.provider, messages)
    return model_catalog.cost_of(resolved, prompt, max_tokens)
