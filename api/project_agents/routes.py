"""Seed 001's nested agent routes: /projects/{project_id}/agents, aliases of /agents."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.agents.schemas import (
    AgentCreateSchema,
    AgentListArgsSchema,
    AgentListSchema,
    AgentSchema,
    AgentUpdateSchema,
)
from api.common.schemas import page_request
from api.security import current_principal, requires, sessions
from orchestration import agents

blp = Blueprint(
    "project_agents",
    __name__,
    url_prefix="/api/v1/projects/<uuid:project_id>/agents",
    description="A project's agents (seed 001)",
)


@blp.route("")
class ProjectAgents(MethodView):
    @requires()
    @blp.arguments(AgentListArgsSchema, location="query")
    @blp.response(200, AgentListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's agents (filters: status, type; sort)."""
        filters = agents.AgentFilters(status=args.get("status"), type=args.get("type"))
        return agents.list_project_agents(
            sessions(), principal=current_principal(), project_id=project_id, filters=filters,
            page=page_request(args),
        )  # fmt: skip

    @requires("agent:write")
    @blp.arguments(AgentCreateSchema)
    @blp.response(201, AgentSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID):
        """Create an agent in the project."""
        return agents.create_agent(
            sessions(), principal=current_principal(), data={**data, "project_id": project_id}
        )


@blp.route("/<uuid:agent_id>")
class ProjectAgentById(MethodView):
    @requires("agent:write")
    @blp.arguments(AgentUpdateSchema)
    @blp.response(200, AgentSchema)
    def patch(self, changes: dict[str, Any], project_id: uuid.UUID, agent_id: uuid.UUID):
        """Update an agent of the project."""
        return agents.update_project_agent(
            sessions(), principal=current_principal(), project_id=project_id,
            agent_id=agent_id, changes=changes,
        )  # fmt: skip
