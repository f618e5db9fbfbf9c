"""Seed 000's endpoints below /compat/vel-tutor/api/v1 (its ``/api/...`` paths, under its
``/api/v1`` base): each view maps the request, calls the orchestration function the
canonical view calls, and shapes the document's answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView
from flask_jwt_extended import decode_token

from api.agents.schemas import AgentCreateSchema, AgentUpdateSchema
from api.auth.routes import login_attempts, refresh_claims
from api.auth.schemas import RefreshSchema
from api.common.openapi import answers, job_submission
from api.compat import core
from api.compat.vel_tutor import DIALECT, ROLE_WORDS, ROLES_BY_WORD, STATUS_WORDS
from api.compat.vel_tutor.schemas import (
    VelTutorAgentListArgsSchema,
    VelTutorAgentListSchema,
    VelTutorAgentSchema,
    VelTutorAgentTestResultSchema,
    VelTutorAgentTestSchema,
    VelTutorCancelledSchema,
    VelTutorHealthSchema,
    VelTutorLoginAnswerSchema,
    VelTutorLoginSchema,
    VelTutorRefreshAnswerSchema,
    VelTutorTaskDetailSchema,
    VelTutorTaskListArgsSchema,
    VelTutorTaskListSchema,
    VelTutorTaskSchema,
    VelTutorUserCreateSchema,
    VelTutorUserListArgsSchema,
    VelTutorUserListSchema,
    VelTutorUserSchema,
    VelTutorUserUpdateSchema,
    present_task,
    present_task_detail,
)
from api.ratelimits import authenticated_principal
from api.security import current_principal, requires, sessions, stream_principal
from api.streams.routes import SSE_DOC, event_stream
from api.streams.schemas import StreamArgsSchema, TaskSSE
from api.tasks.routes import task_submission
from api.tasks.schemas import TaskCreateSchema
from models import TERMINAL_STATUSES, JobKind
from orchestration import accounts, agent_runs, agents, health, jobs

blp = DIALECT.blueprint
# The token's ``role`` claim in the document's words (admin | user), as its user objects;
# Baton authorises by the user's current role in the database, never by this claim.
issue = core.token_issuer(claims=lambda user: {"role": ROLE_WORDS.get(user.role, "user")})


def _expires_at(token: str) -> datetime:
    return datetime.fromtimestamp(decode_token(token)["exp"], UTC)


# -- auth -----------------------------------------------------------------------------------


@blp.route("/auth/login")
class Login(MethodView):
    @login_attempts
    @blp.arguments(VelTutorLoginSchema)
    @blp.response(200, VelTutorLoginAnswerSchema)
    @answers(401, "Invalid credentials.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Email and password -> a JWT, its expiry, and the user (5 attempts/min per IP)."""
        signin = core.password_sign_in(data, issue=issue)
        return {
            "user": VelTutorUserSchema().dump(signin.user),
            "token": signin.tokens.access_token,
            "expires_at": _expires_at(signin.tokens.access_token),
            "refresh_token": signin.tokens.refresh_token,
        }


@blp.route("/auth/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, VelTutorRefreshAnswerSchema)
    @answers(401, "The refresh token is invalid, expired or already spent.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """A new JWT for a refresh token (which rotates: use the one answered next time)."""
        claims = refresh_claims(data["refresh_token"])
        signin = accounts.refresh(sessions(), jti=claims["jti"], issue=issue)
        return {
            "token": signin.tokens.access_token,
            "expires_at": _expires_at(signin.tokens.access_token),
            "refresh_token": signin.tokens.refresh_token,
        }


# -- users ----------------------------------------------------------------------------------


@blp.route("/users/me")
class Me(MethodView):
    @requires()
    @blp.response(200, VelTutorUserSchema)
    def get(self):
        """The caller's profile."""
        return accounts.get_current_user(sessions(), principal=current_principal())

    @requires()
    @blp.arguments(VelTutorUserUpdateSchema)
    @blp.response(200, VelTutorUserSchema)
    @answers(409, "The email is taken.")
    def put(self, changes: dict[str, Any]):
        """Change the caller's email or password."""
        return accounts.update_current_user(
            sessions(), principal=current_principal(), changes=changes
        )


@blp.route("/users")
class Users(MethodView):
    @requires("user:admin")
    @blp.arguments(VelTutorUserCreateSchema)
    @blp.response(201, VelTutorUserSchema)
    @answers(409, "The email is taken.")
    def post(self, data: dict[str, Any]):
        """Create a user (admin only); role ``user`` or ``admin``."""
        new_user = accounts.NewUser(
            email=data["email"], password=data["password"], role=ROLES_BY_WORD[data["role"]]
        )
        return accounts.create_user(sessions(), principal=current_principal(), new_user=new_user)

    @requires("user:admin")
    @blp.arguments(VelTutorUserListArgsSchema, location="query")
    @blp.response(200, VelTutorUserListSchema)
    def get(self, args: dict[str, Any]):
        """List the organization's users (admin only)."""
        return accounts.list_users(
            sessions(),
            principal=current_principal(),
            role=ROLES_BY_WORD.get(args.get("role", "")),
            page=core.page_request(args),
        )


# -- agents ---------------------------------------------------------------------------------


@blp.route("/agents")
class Agents(MethodView):
    @requires("agent:write")
    @blp.arguments(AgentCreateSchema)
    @blp.response(201, VelTutorAgentSchema)
    def post(self, data: dict[str, Any]):
        """Create an agent configuration (providers and models checked against the catalog)."""
        return agents.create_agent(sessions(), principal=current_principal(), data=data)

    @requires()
    @blp.arguments(VelTutorAgentListArgsSchema, location="query")
    @blp.response(200, VelTutorAgentListSchema)
    def get(self, args: dict[str, Any]):
        """List agents (filter: status)."""
        filters = agents.AgentFilters(status=[args["status"]] if args.get("status") else None)
        return agents.list_agents(
            sessions(), principal=current_principal(), filters=filters, page=core.page_request(args)
        )


@blp.route("/agents/<uuid:agent_id>")
class AgentById(MethodView):
    @requires()
    @blp.response(200, VelTutorAgentSchema)
    def get(self, agent_id: uuid.UUID):
        """An agent with its configuration."""
        return agents.get_agent(sessions(), principal=current_principal(), agent_id=agent_id)

    @requires("agent:write")
    @blp.arguments(AgentUpdateSchema)
    @blp.response(200, VelTutorAgentSchema)
    def put(self, changes: dict[str, Any], agent_id: uuid.UUID):
        """Update an agent; config keys given are merged into its configuration."""
        return agents.update_agent(
            sessions(), principal=current_principal(), agent_id=agent_id, changes=changes
        )

    @requires("agent:write")
    @blp.response(204)
    def delete(self, agent_id: uuid.UUID):
        """Delete an agent."""
        agents.delete_agent(sessions(), principal=current_principal(), agent_id=agent_id)


@blp.route("/agents/<uuid:agent_id>/test")
class AgentTest(MethodView):
    @requires("job:create")
    @blp.arguments(VelTutorAgentTestSchema)
    @blp.response(200, VelTutorAgentTestResultSchema)
    @blp.alt_response(202, schema=VelTutorAgentTestResultSchema, description="Still running")
    @answers(402, "A blocking budget limit is already spent.")
    def post(self, data: dict[str, Any], agent_id: uuid.UUID):
        """Dry run: one real provider round trip with the agent's configuration."""
        detail = agent_runs.run_agent(
            sessions(), principal=current_principal(), agent_id=agent_id,
            input_text=data["test_payload"], task_type=None,
            metadata={"test_type": data["test_type"]},
            wait_seconds=data["wait_seconds"], purpose="test",
        )  # fmt: skip
        job, step = detail.job, (detail.steps[0] if detail.steps else None)
        result = {
            "completed": "Agent configuration valid",
            "failed": f"Agent configuration invalid: {job.error}",
        }.get(job.status, "The test is still running")
        body = {
            "test_id": job.id,
            "status": STATUS_WORDS.word(job.status),
            "result": result,
            "execution_time_ms": step.execution_time_ms if step else None,
            "provider_used": step.provider if step else None,
        }
        return body, 200 if job.status in TERMINAL_STATUSES else 202


# -- tasks ----------------------------------------------------------------------------------


@blp.route("/tasks")
class Tasks(MethodView):
    @requires("job:create")
    @blp.arguments(TaskCreateSchema)
    @blp.response(201, VelTutorTaskSchema)
    @job_submission
    def post(self, data: dict[str, Any]):
        """Create and start a task: 201, status ``pending``."""
        submission = task_submission(data)
        detail = jobs.submit_job(sessions(), principal=current_principal(), submission=submission)
        location = DIALECT.url_for("TaskById", task_id=detail.job.id)
        return present_task(detail.job), 201, {"Location": location}

    @requires("job:read")
    @blp.arguments(VelTutorTaskListArgsSchema, location="query")
    @blp.response(200, VelTutorTaskListSchema)
    def get(self, args: dict[str, Any]):
        """List tasks (filters: status, agent_id)."""
        filters = jobs.JobFilters(
            kind=JobKind.TASK,
            status=STATUS_WORDS.statuses([args["status"]]) if args.get("status") else None,
            agent_id=args.get("agent_id"),
        )
        page = jobs.list_jobs(
            sessions(), principal=current_principal(), filters=filters, page=core.page_request(args)
        )
        return core.mapped(page, present_task)


@blp.route("/tasks/<uuid:task_id>")
class TaskById(MethodView):
    @requires("job:read")
    @blp.response(200, VelTutorTaskDetailSchema)
    def get(self, task_id: uuid.UUID):
        """A task with its result and execution history."""
        return present_task_detail(
            jobs.get_job(
                sessions(), principal=current_principal(), job_id=task_id, kind=JobKind.TASK
            )
        )


@blp.route("/tasks/<uuid:task_id>/cancel")
class TaskCancel(MethodView):
    @requires("job:cancel")
    @blp.response(200, VelTutorCancelledSchema)
    @answers(409, "The task has already finished.")
    def post(self, task_id: uuid.UUID):
        """Cancel a running task; a finished one answers 409."""
        job = jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=task_id, kind=JobKind.TASK
        )
        return {"id": job.id, "status": STATUS_WORDS.word(job.status), "updated_at": job.updated_at}


@blp.route("/tasks/<uuid:task_id>/stream")
class TaskStream(MethodView):
    @requires("job:read", authenticate=stream_principal)
    @blp.arguments(StreamArgsSchema, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args: dict[str, Any], task_id: uuid.UUID):
        """Server-Sent Events: ``{"progress", "status", "message"}``, the last with ``result``."""
        return event_stream(task_id, args, JobKind.TASK, TaskSSE())


# -- system ---------------------------------------------------------------------------------


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, VelTutorHealthSchema)
    @blp.doc(security=[])
    def get(self):
        """System health and each dependency."""
        caller = authenticated_principal()  # optional: health is public
        report = health.health_report(
            sessions(), organization_id=caller.organization_id if caller else None
        )
        providers = report.providers or {}

        def provider(name: str) -> str:
            return providers[name].status if name in providers else "not_configured"

        return {
            "status": report.status,
            "timestamp": report.timestamp,
            "uptime": health.human_uptime(report.uptime_seconds),
            "version": report.version,
            "dependencies": {
                "database": report.database,
                "openai": provider("openai"),
                "groq": provider("groq"),
                # Task servers are per-organization integrations: the caller's, when
                # the request carries a valid token; none is global.
                "task_master": report.task_servers or "not_configured",
            },
        }
