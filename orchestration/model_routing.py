"""Model routing: which model a job's step calls, and the submission-time check that every
model a job will call is known and priced (the organization's own providers count)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from models import Agent, Organization
from orchestration import integrations, model_catalog
from orchestration.errors import ValidationFailed, field_error
from orchestration.plans import PhasePlan


def resolve_step_model(
    *,
    job_settings: dict[str, Any],
    agent: Agent | None,
    organization: Organization | None,
    task_type: str,
    catalog: model_catalog.Catalog | None = None,
) -> str:
    """The job's settings, else the agent's ``model_preferences`` for the step's task type
    (or its ``default`` entry), else the agent's ``model_config.model``, else the
    organization's ``default_ai_model``, else the deployment's default model."""
    config = (agent.config or {}) if agent else {}
    preferences = config.get("model_preferences") or {}
    for candidate in (
        job_settings.get("model") or job_settings.get("ai_model"),
        preferences.get(task_type),
        preferences.get("default"),
        (config.get("model_config") or {}).get("model"),
        ((organization.settings or {}).get("default_ai_model")) if organization else None,
    ):
        if candidate:
            return candidate
    return (catalog or model_catalog.operator_catalog()).default_model()


def validate_models(
    session: Session,
    plans: list[PhasePlan],
    job_settings: dict[str, Any],
    agent: Agent | None,
    org: Organization | None,
    organization_id: uuid.UUID,
) -> None:
    """An unknown provider or model, or a model with no price, is a 422 now, not a failed
    job later; the organization's own providers (integrations) count.

    The operator's catalog is tried first: the organization's integrations only add
    providers, so when every name is found there the answer is the same, without a query.
    """
    try:
        _check_models(model_catalog.operator_catalog(), plans, job_settings, agent, org)
    except ValidationFailed:
        catalog = integrations.catalog_for(session, organization_id=organization_id)
        _check_models(catalog, plans, job_settings, agent, org)


def _check_models(
    catalog: model_catalog.Catalog,
    plans: list[PhasePlan],
    job_settings: dict[str, Any],
    agent: Agent | None,
    org: Organization | None,
) -> None:
    config = (agent.config or {}) if agent else {}
    providers = list(config.get("providers") or [])
    for name in [*providers, *(config.get("fallback_models") or {})]:
        if name not in catalog:
            raise field_error(
                "agent_id", f"the agent names provider '{name}', which is not configured"
            )
    seen: set[str] = set()
    for phase in plans:
        for step in phase.steps:
            if step.spec.get("kind") != "llm":
                continue
            name = resolve_step_model(
                job_settings=job_settings,
                agent=agent,
                organization=org,
                task_type=step.spec["task_type"],
                catalog=catalog,
            )
            if name not in seen:
                seen.add(name)
                catalog.price_for(catalog.resolve(name, providers))


def names_model(job_settings: dict[str, Any]) -> bool:
    """The job names its model itself: the organization's default is not needed."""
    return bool(job_settings.get("model") or job_settings.get("ai_model"))
