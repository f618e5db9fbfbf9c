"""A streamed answer: each text delta handed to the caller's hooks as it arrives, the exact
usage from the last chunk (``stream_options.include_usage``), and what a stream cut off
midway costs (the prompt estimate plus the tokens of the partial text)."""

from __future__ import annotations

import time
from typing import Any

from orchestration.model_catalog import Catalog, ResolvedModel
from workers.providers import estimate
from workers.providers.errors import ProviderError
from workers.providers.types import (
    Answer,
    Attempt,
    CallHooks,
    Charge,
    CompletionRequest,
    StreamProgress,
)


def streamed(
    client: Any,
    params: dict[str, Any],
    timeout: float,
    deadline: float,
    info: Attempt,
    hooks: CallHooks,
    progress: StreamProgress,
    where: dict[str, str],
) -> Answer:
    stream = client.chat.completions.create(
        **params, timeout=timeout, stream=True, stream_options={"include_usage": True}
    )
    progress.opened = True
    usage = None
    finish = None
    try:
        for chunk in stream:
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in getattr(chunk, "choices", None) or []:
                delta = getattr(getattr(choice, "delta", None), "content", None)
                if delta:
                    progress.parts.append(delta)
                    hooks.on_delta(info, delta)
                finish = getattr(choice, "finish_reason", None) or finish
            if time.monotonic() > deadline:
                raise ProviderError(
                    "timeout", f"{where['model']}: the stream did not finish in time",
                    retryable=True, **where,
                )  # fmt: skip
    finally:
        stream.close()
    text = "".join(progress.parts)
    if finish is None:
        raise ProviderError(
            "stream_cut", f"{where['model']}: the stream ended before the answer was complete",
            retryable=True, **where,
        )  # fmt: skip
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        return Answer(text, prompt, completion, finish)
    # A server that ignores stream_options: count like a cut stream, and say so.
    return Answer(
        text,
        estimate.estimate_prompt_tokens(info.provider, params["messages"]),
        estimate.estimate_completion_tokens(info.provider, text),
        finish,
        estimated=True,
    )


def partial_charge(
    catalog: Catalog, resolved: ResolvedModel, request: CompletionRequest, progress: StreamProgress
) -> Charge | None:
    """A stream the provider started answering costs what it generated, never zero."""
    if not progress.opened:
        return None
    text = "".join(progress.parts)
    prompt = estimate.estimate_prompt_tokens(resolved.provider, request.messages)
    completion = estimate.estimate_completion_tokens(resolved.provider, text)
    return Charge(prompt, completion, catalog.cost_of(resolved, prompt, completion), True)
