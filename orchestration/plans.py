"""Each job kind turns its input into a plan: ordered phases, each of one or more steps.

A phase with several steps runs them in parallel and joins (a Celery chord). Step specs
hold what the worker needs to build the prompt at run time: prompts are fed by previous
phases' outputs, which only exist once those phases have run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models import JobKind

DEFAULT_ORCHESTRATION_PHASES = ("ideation", "design", "implementation", "testing", "deployment")
DEFAULT_BUILD_COMPONENTS = ("core", "api", "tests")
ANALYSIS_TYPES = ("quality", "security", "types", "performance", "documentation")

PHASE_TASK_TYPES = {
    "ideation": "research",
    "research": "research",
    "requirements": "research",
    "design": "complex_reasoning",
    "architecture": "complex_reasoning",
    "planning": "complex_reasoning",
    "implementation": "code_generation",
    "development": "code_generation",
    "testing": "code_generation",
    "review": "complex_reasoning",
}


@dataclass
class StepPlan:
    name: str
    spec: dict[str, Any]


@dataclass
class PhasePlan:
    name: str
    steps: list[StepPlan] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.name.replace("_", " ").replace("-", " ").title()


def _llm_step(name: str, task_type: str, instruction: str, **extra: Any) -> StepPlan:
    return StepPlan(
        name=name,
        spec={"kind": "llm", "task_type": task_type, "instruction": instruction, **extra},
    )


def task_plan(data: dict[str, Any]) -> list[PhasePlan]:
    params = data.get("parameters") or {}
    instruction = "\n\n".join(part for part in (data.get("title"), data.get("description")) if part)
    return [
        PhasePlan(
            "execution",
            [_llm_step("execution", params.get("task_type", "general"), instruction)],
        )
    ]


def build_plan(data: dict[str, Any]) -> list[PhasePlan]:
    goal = data["goal"]
    params = data.get("parameters") or {}
    components = params.get("components") or list(DEFAULT_BUILD_COMPONENTS)
    return [
        PhasePlan(
            "plan",
            [_llm_step("plan", "complex_reasoning", f"Plan the implementation of: {goal}")],
        ),
        PhasePlan(
            "generate",
            [
                _llm_step(
                    f"generate:{component}",
                    "code_generation",
                    f"Write the code for the '{component}' component of: {goal}",
                    component=component,
                )
                for component in components
            ],
        ),
        PhasePlan(
            "test",
            [
                _llm_step(
                    "test",
                    "code_generation",
                    f"Write and reason through tests for: {goal}. End with the lines "
                    "'Tests passed: N' and 'Coverage: N%'.",
                )
            ],
        ),
        PhasePlan(
            "review",
            [_llm_step("review", "complex_reasoning", f"Review the generated work for: {goal}")],
        ),
    ]


# How a security analysis writes each finding (orchestration.results.security_issue reads it).
SECURITY_FINDING_FORMAT = (
    "one per line as '- <issue> | severity: critical|high|medium|low | line: <number> | "
    "recommendation: <fix>', "
)


def analysis_plan(data: dict[str, Any]) -> list[PhasePlan]:
    project = data["project_name"]
    return [
        PhasePlan(
            "analyze",
            [
                _llm_step(
                    f"analyze:{kind}",
                    "code_analysis",
                    f"Perform a {kind} analysis of the project '{project}'. "
                    "List concrete findings and recommendations, "
                    + (SECURITY_FINDING_FORMAT if kind == "security" else "")
                    + "and end with a line 'Score: N/10'.",
                    analysis_type=kind,
                )
                for kind in data["analysis_types"]
            ],
        ),
        PhasePlan("score", [StepPlan("score", {"kind": "score"})]),
    ]


def orchestration_plan(data: dict[str, Any], phase_names: list[str]) -> list[PhasePlan]:
    topic = data["topic"]
    return [
        PhasePlan(
            name,
            [
                _llm_step(
                    name,
                    PHASE_TASK_TYPES.get(name.lower(), "general"),
                    f"Phase {index} ({name}) of the orchestration on: {topic}",
                )
            ],
        )
        for index, name in enumerate(phase_names)
    ]


def agent_run_plan(data: dict[str, Any]) -> list[PhasePlan]:
    """An agent run (seed 002 execute, seed 000 test): one call with the agent's config."""
    return [
        PhasePlan(
            "execution",
            [_llm_step("execution", data.get("task_type") or "general", data["input"])],
        )
    ]


def chat_plan(data: dict[str, Any]) -> list[PhasePlan]:
    """A conversation's reply: one call; the worker builds the prompt from the history."""
    return [
        PhasePlan(
            "reply",
            [
                _llm_step(
                    "reply", "chat", data["message"],
                    conversation_id=data["conversation_id"],
                    reply_message_id=data["reply_message_id"],
                )
            ],
        )
    ]  # fmt: skip


def plan_for(
    kind: JobKind, data: dict[str, Any], phase_names: list[str] | None = None
) -> list[PhasePlan]:
    if kind == JobKind.TASK:
        return task_plan(data)
    if kind == JobKind.BUILD:
        return build_plan(data)
    if kind == JobKind.ANALYSIS:
        return analysis_plan(data)
    if kind == JobKind.AGENT_RUN:
        return agent_run_plan(data)
    if kind == JobKind.CHAT:
        return chat_plan(data)
    if kind == JobKind.ORCHESTRATION:
        return orchestration_plan(data, phase_names or list(DEFAULT_ORCHESTRATION_PHASES))
    raise ValueError(f"no plan for job kind {kind}")
