"""Agents: named provider/model configurations that jobs run with. Scoped to the caller's org.

``config`` holds providers (ordered, for fallback), model_preferences by task type,
fallback_models by provider, max_retries, timeout_seconds, stream, model_config and
system_prompt. Every provider and model is
checked against the catalog here, so a job never starts with a name no worker can route.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Agent, UsageRecord, utcnow
from models.db import transaction
from orchestration import integrations, model_catalog
from orchestration.errors import NotFound, ValidationFailed, field_error
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.ownership import get_owned
from orchestration.principal import Principal
from orchestration.projects import owned_project
from orchestration.reports import UsageTotals, today_usage

STATUSES = ("active", "inactive", "paused")
DEFAULT_CONFIG: dict[str, Any] = {"max_retries": 3, "timeout_seconds": 120}
SORTS = {
    "name": Agent.name,
    "type": Agent.type,
    "status": Agent.status,
    "created_at": Agent.created_at,
    "updated_at": Agent.updated_at,
}


@dataclass
class AgentView:
    agent: Agent
    today: UsageTotals = field(default_factory=UsageTotals)  # seed 001 ``stats``


@dataclass
class AgentFilters:
    status: list[str] | None = None
    project_id: uuid.UUID | None = None
    type: str | None = None


def _as_field(exc: ValidationFailed, field_name: str) -> ValidationFailed:
    """The catalog names its own field ("model"); say where in the agent it was."""
    message = exc.details[0]["message"] if exc.details else exc.message
    return field_error(field_name, message)


def validate_config(config: dict[str, Any], catalog: model_catalog.Catalog | None = None) -> None:
    """Unknown providers or models are a 422 naming the exact config key. ``catalog`` is
    the organization's (its integrations count); the operator's when not given."""
    catalog = catalog or model_catalog.operator_catalog()
    providers = config.get("providers") or []
    for index, name in enumerate(providers):
        catalog.validate_provider(name, f"config.providers.{index}")
    for task_type, model in (config.get("model_preferences") or {}).items():
        try:
            catalog.resolve(model, providers)
        except ValidationFailed as exc:
            raise _as_field(exc, f"config.model_preferences.{task_type}") from exc
    model = (config.get("model_config") or {}).get("model")
    if model:
        try:
            catalog.resolve(model, providers)
        except ValidationFailed as exc:
            raise _as_field(exc, "config.model_config.model") from exc
    for provider, model in (config.get("fallback_models") or {}).items():
        where = f"config.fallback_models.{provider}"
        catalog.validate_provider(provider, where)
        qualified = model if model.startswith(f"{provider}/") else f"{provider}/{model}"
        try:
            catalog.price_for(catalog.resolve(qualified))
        except ValidationFailed as exc:
            raise _as_field(exc, where) from exc


# -- helpers (session in, never commit) ---------------------------------------------------


def check_executor(session: Session, config: dict[str, Any], organization_id: uuid.UUID) -> None:
    """``executor: external`` needs ``task_server``: one of the organization's task servers."""
    name = config.get("task_server")
    if config.get("executor") == "external" and not name:
        raise field_error("config.task_server", "required when executor is 'external'")
    if (
        name
        and integrations.task_server(session, organization_id=organization_id, name=name) is None
    ):
        raise field_error("config.task_server", f"no task server integration named '{name}'")


def owned_agent(session: Session, *, principal: Principal, agent_id: uuid.UUID) -> Agent:
    return get_owned(
        session, Agent, agent_id, organization_id=principal.organization_id, what="Agent",
        field="agent_id",
    )  # fmt: skip


def _views(session: Session, agents: list[Agent]) -> list[AgentView]:
    """Agents with today's ledger totals, in one grouped query for the whole page."""
    if not agents:
        return []
    today = today_usage(
        session,
        organization_id=agents[0].organization_id,
        column=UsageRecord.agent_id,
        ids=[a.id for a in agents],
    )
    return [AgentView(a, today.get(a.id, UsageTotals())) for a in agents]


# -- commands and queries ------------------------------------------------------------------


def add_agent(session: Session, *, principal: Principal, data: dict[str, Any]) -> Agent:
    """A new agent of the caller's organization, its config checked (never commits)."""
    config = {**DEFAULT_CONFIG, **(data.get("config") or {})}
    validate_config(
        config, integrations.catalog_for(session, organization_id=principal.organization_id)
    )
    check_executor(session, config, principal.organization_id)
    if data.get("project_id") is not None:
        owned_project(session, principal=principal, project_id=data["project_id"])
    agent = Agent(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        project_id=data.get("project_id"),
        name=data["name"],
        type=data.get("type") or "general",
        status=data.get("status") or "active",
        config=config,
        description=data.get("description"),
        meta=data.get("metadata") or {},
    )
    session.add(agent)
    session.flush()
    return agent


def create_agent(
    sessions: sessionmaker[Session], *, principal: Principal, data: dict[str, Any]
) -> AgentView:
    with transaction(sessions) as session:
        agent = add_agent(session, principal=principal, data=data)
        return _views(session, [agent])[0]


def list_agents(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    filters: AgentFilters,
    page: PageRequest,
) -> Page[AgentView]:
    stmt = sa.select(Agent).where(Agent.organization_id == principal.organization_id)
    if filters.status:
        stmt = stmt.where(Agent.status.in_(filters.status))
    if filters.project_id:
        stmt = stmt.where(Agent.project_id == filters.project_id)
    if filters.type:
        stmt = stmt.where(Agent.type == filters.type)
    stmt = apply_sort(stmt, page.sort, SORTS, Agent.created_at.desc()).order_by(Agent.id)
    with sessions() as session:
        result = paginate(session, stmt, page)
        items = _views(session, result.items)
    return result.with_items(items)


def get_agent(
    sessions: sessionmaker[Session], *, principal: Principal, agent_id: uuid.UUID
) -> AgentView:
    with sessions() as session:
        return _views(session, [owned_agent(session, principal=principal, agent_id=agent_id)])[0]


def update_agent(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    agent_id: uuid.UUID,
    changes: dict[str, Any],
) -> AgentView:
    """``config`` keys are merged into the stored config (seed 000 sends partial configs)."""
    with transaction(sessions) as session:
        agent = owned_agent(session, principal=principal, agent_id=agent_id)
        if "config" in changes:
            stored, given = agent.config or {}, changes["config"] or {}
            config = {**DEFAULT_CONFIG, **stored, **given}
            if "model_config" in given:  # seed 002's PUT {"temperature": ...} keeps the model
                config["model_config"] = {
                    **(stored.get("model_config") or {}),
                    **(given["model_config"] or {}),
                }
            validate_config(
                config,
                integrations.catalog_for(session, organization_id=principal.organization_id),
            )
            check_executor(session, config, principal.organization_id)
            agent.config = config
        if "project_id" in changes:
            if changes["project_id"] is not None:
                owned_project(session, principal=principal, project_id=changes["project_id"])
            agent.project_id = changes["project_id"]
        for name in ("name", "type", "status", "description"):
            if name in changes:
                setattr(agent, name, changes[name])
        if "metadata" in changes:
            agent.meta = changes["metadata"] or {}
        agent.updated_at = utcnow()
        session.flush()
        return _views(session, [agent])[0]


def delete_agent(
    sessions: sessionmaker[Session], *, principal: Principal, agent_id: uuid.UUID
) -> None:
    """Jobs that ran with the agent keep their history (agent_id SET NULL)."""
    with transaction(sessions) as session:
        session.delete(owned_agent(session, principal=principal, agent_id=agent_id))


# -- seed 001's nested spellings (issue 11): /projects/{id}/agents ------------------------


def list_project_agents(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    filters: AgentFilters,
    page: PageRequest,
) -> Page[AgentView]:
    """The project's agents; another organization's project is a 404."""
    with sessions() as session:
        owned_project(session, principal=principal, project_id=project_id)
    filters.project_id = project_id
    return list_agents(sessions, principal=principal, filters=filters, page=page)


def update_project_agent(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    agent_id: uuid.UUID,
    changes: dict[str, Any],
) -> AgentView:
    """``update_agent`` for an agent of the project (an agent of another project: 404)."""
    with sessions() as session:
        owned_project(session, principal=principal, project_id=project_id)
        if owned_agent(session, principal=principal, agent_id=agent_id).project_id != project_id:
            raise NotFound(f"agent {agent_id} not found in project {project_id}")
    return update_agent(sessions, principal=principal, agent_id=agent_id, changes=changes)
