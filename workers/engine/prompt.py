"""A claimed step's provider request: system prompt, instruction, job input and the
earlier phases' outputs, model routing and the agent's call settings."""

from __future__ import annotations

import json
from typing import Any

from baton.settings import get_settings
from models import (
    JobKind,
)
from orchestration.model_routing import resolve_step_model
from workers.engine.core import StepContext
from workers.providers import (
    CompletionRequest,
)

PREVIOUS_OUTPUT_CHARS = 4000
DEFAULT_SYSTEM_PROMPTS = {
    JobKind.TASK: "You are a capable assistant completing a task for a user.",
    JobKind.BUILD: "You are a senior software engineer building a project step by step.",
    JobKind.ANALYSIS: "You are a meticulous code reviewer and security analyst.",
    JobKind.ORCHESTRATION: "You are one phase of a multi-phase AI orchestration. Build on the previous phases.",
}


def build_request(ctx: StepContext) -> CompletionRequest:
    job, spec = ctx.job, ctx.step.spec
    config: dict[str, Any] = (ctx.agent.config if ctx.agent else None) or {}
    model_config: dict[str, Any] = config.get("model_config") or {}
    settings = job.settings or {}
    system = config.get("system_prompt") or DEFAULT_SYSTEM_PROMPTS.get(JobKind(job.kind), "")
    parts = [spec.get("instruction", "")]
    context = {k: v for k, v in (job.input or {}).items() if k not in {"title"} and v}
    if context:
        parts.append(
            "Job input:\n" + json.dumps(context, default=str, indent=1)[:PREVIOUS_OUTPUT_CHARS]
        )
    for name, output in ctx.previous:
        parts.append(f"Output of phase '{name}':\n{output[:PREVIOUS_OUTPUT_CHARS]}")
    model = resolve_step_model(
        job_settings=settings,
        agent=ctx.agent,
        organization=ctx.organization,
        task_type=spec.get("task_type", "general"),
        catalog=ctx.providers.catalog if ctx.providers else None,
    )
    temperature = settings.get("temperature", model_config.get("temperature"))
    stream = settings.get("stream")
    return CompletionRequest(
        model=model,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)},
        ],
        max_tokens=int(
            settings.get("max_tokens")
            or model_config.get("max_tokens")
            or get_settings().default_max_tokens
        ),
        temperature=float(temperature) if temperature is not None else None,
        providers=list(config.get("providers") or []),
        max_retries=int(config.get("max_retries", 2)),
        timeout_seconds=float(config.get("timeout_seconds", 60)),
        fallback_models=dict(config.get("fallback_models") or {}),
        stream=bool(config.get("stream", False) if stream is None else stream),
        sim_fault=settings.get("sim_fault"),
        # Fallbacks included, the call ends before the step's soft time limit.
        total_timeout_seconds=max(get_settings().step_soft_time_limit - 5, 1),
    )
