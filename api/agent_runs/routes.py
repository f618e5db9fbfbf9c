"""POST /agents/{id}/test and /agents/{id}/execute: an agent run the caller waits on.

200 when the run finished within ``wait_seconds`` (completed or failed), else 202 with the
run's Location to poll at /jobs/{id}.
"""

from __future__ import annotations

import uuid

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from api.agent_runs.schemas import (
    AgentExecuteSchema,
    AgentRunSchema,
    AgentTestResultSchema,
    AgentTestSchema,
    present_run,
    present_test,
)
from api.common.openapi import answers
from api.security import current_principal, requires, sessions
from models import TERMINAL_STATUSES
from orchestration import agent_runs

blp = Blueprint(
    "agent_runs", __name__, url_prefix="/api/v1/agents", description="Agent test and execute"
)


def _answer(body: dict, detail) -> tuple[dict, int, dict[str, str]]:  # type: ignore[no-untyped-def]
    status = 200 if detail.job.status in TERMINAL_STATUSES else 202
    return body, status, {"Location": body["location"]}


@blp.route("/<uuid:agent_id>/test")
class AgentTest(MethodView):
    @requires("job:create")
    @blp.arguments(AgentTestSchema)
    @blp.response(200, AgentTestResultSchema)
    @blp.alt_response(202, schema=AgentTestResultSchema, description="Still running")
    @answers(402, "A blocking budget limit is already spent.")
    def post(self, data, agent_id: uuid.UUID):
        """Dry run: one real provider round trip with the agent's configuration."""
        detail = agent_runs.run_agent(
            sessions(), principal=current_principal(), agent_id=agent_id,
            input_text=data["test_payload"], task_type=None, metadata={"test_type": data["test_type"]},
            wait_seconds=data["wait_seconds"], purpose="test",
        )  # fmt: skip
        location = url_for("jobs.JobById", job_id=detail.job.id)
        return _answer(present_test(detail, location), detail)


@blp.route("/<uuid:agent_id>/execute")
class AgentExecute(MethodView):
    @requires("job:create")
    @blp.arguments(AgentExecuteSchema)
    @blp.response(200, AgentRunSchema)
    @blp.alt_response(202, schema=AgentRunSchema, description="Still running")
    @answers(402, "A blocking budget limit is already spent.")
    def post(self, data, agent_id: uuid.UUID):
        """Run the agent on an input; waits up to ``wait_seconds`` for the answer."""
        detail = agent_runs.run_agent(
            sessions(), principal=current_principal(), agent_id=agent_id,
            input_text=data["input"], task_type=data.get("task_type"), metadata=data["metadata"],
            wait_seconds=data["wait_seconds"], purpose="execute",
        )  # fmt: skip
        location = url_for("jobs.JobById", job_id=detail.job.id)
        return _answer(present_run(detail, location), detail)
