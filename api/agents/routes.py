"""CRUD /agents (test/execute are job kinds, elsewhere)."""

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

blp = Blueprint("agents", __name__, url_prefix="/api/v1/agents", description="Agents")


@blp.route("")
class Agents(MethodView):
    @requires()
    @blp.arguments(AgentListArgsSchema, location="query")
    @blp.response(200, AgentListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's agents (filters: status, project_id, type; sort)."""
        filters = agents.AgentFilters(
            status=args.get("status"), project_id=args.get("project_id"), type=args.get("type")
        )
        page = agents.list_agents(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )
        # The list schema dumps the Page (items, total, limit, offset) itself.
        return page

    @requires("agent:write")
    @blp.arguments(AgentCreateSchema)
    @blp.response(201, AgentSchema)
    def post(self, data: dict[str, Any]):
        """Create an agent; every provider and model is checked against the catalog."""
        return agents.create_agent(sessions(), principal=current_principal(), data=data)


@blp.route("/<uuid:agent_id>")
class AgentById(MethodView):
    @requires()
    @blp.response(200, AgentSchema)
    def get(self, agent_id: uuid.UUID):
        """An agent with its full config."""
        return agents.get_agent(sessions(), principal=current_principal(), agent_id=agent_id)

    @requires("agent:write")
    @blp.arguments(AgentUpdateSchema)
    @blp.response(200, AgentSchema)
    def put(self, changes: dict[str, Any], agent_id: uuid.UUID):
        """Update an agent; config keys given are merged into the stored config."""
        return agents.update_agent(
            sessions(), principal=current_principal(), agent_id=agent_id, changes=changes
        )

    @requires("agent:write")
    @blp.arguments(AgentUpdateSchema)
    @blp.response(200, AgentSchema)
    def patch(self, changes: dict[str, Any], agent_id: uuid.UUID):
        """Seed 001 spelling of the update."""
        return agents.update_agent(
            sessions(), principal=current_principal(), agent_id=agent_id, changes=changes
        )

    @requires("agent:write")
    @blp.response(204)
    def delete(self, agent_id: uuid.UUID):
        """Delete an agent; jobs that used it keep their history."""
        agents.delete_agent(sessions(), principal=current_principal(), agent_id=agent_id)
