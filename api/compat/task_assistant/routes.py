"""Seed 002's endpoints: each view maps the document's request, calls the one
orchestration function the canonical view calls, and shapes the document's answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_jwt_extended import get_jwt

from api.agent_runs.schemas import AgentExecuteSchema
from api.agent_runs.schemas import present_run as canonical_run
from api.agents.schemas import AgentCreateSchema
from api.auth.routes import login_attempts
from api.common.openapi import answers, job_submission
from api.compat import core
from api.compat.task_assistant import DIALECT, STATUS_WORDS
from api.compat.task_assistant.schemas import (
    TaAgentSchema,
    TaConversationCreateSchema,
    TaConversationSchema,
    TaLoginSchema,
    TaMessageSchema,
    TaRegisterSchema,
    TaRunSchema,
    TaTaskListArgsSchema,
    TaTaskListSchema,
    TaTaskSchema,
    TaTokenSchema,
    TaUserSchema,
    TaWebhookCreateSchema,
    TaWebhookSchema,
    present_run,
    present_task,
)
from api.conversations.routes import SSE_DOC, _sse
from api.conversations.schemas import ChatMessageSchema
from api.extensions import limiter
from api.ratelimits import ip_key
from api.security import current_principal, requires, sessions
from api.streams.sockets import multiplexed_socket, sock
from api.tasks.routes import task_submission
from api.tasks.schemas import TaskCreateSchema
from api.webhooks.schemas import present_webhook
from baton.settings import get_settings
from models import TERMINAL_STATUSES, JobKind
from orchestration import accounts, agent_runs, agents, conversations, jobs, webhooks
from orchestration.errors import ValidationFailed, field_error

blp = DIALECT.blueprint
issue = core.token_issuer()

# The document's WebSocket (``auth`` frame first, then ``chat``/``agent_execute``/
# ``subscribe``): the canonical socket, under this base too.
sock.route(f"{DIALECT.base}/ws", endpoint="task_assistant_ws")(multiplexed_socket)


def _token(signin: accounts.SignIn) -> dict[str, Any]:
    return {
        "access_token": signin.tokens.access_token,
        "token_type": "bearer",
        "expires_in": signin.tokens.expires_in,
    }


# -- auth -----------------------------------------------------------------------------------


def _auth_limit() -> str:
    return DIALECT.rate_limit("auth") or "10 per 15 minutes"


# The document's "Auth Endpoints: 10 requests/15 minutes", one bucket per client address
# for register, login and refresh (login also counts in Baton's sign-in bucket).
auth_attempts = limiter.shared_limit(_auth_limit, scope="task_assistant_auth", key_func=ip_key)


@blp.route("/auth/register")
class Register(MethodView):
    @auth_attempts
    @blp.arguments(TaRegisterSchema)
    @blp.response(201, TaUserSchema)
    @answers(409, "The email is taken.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Register a new user (an admin) and create its tenant (``tenant_name``)."""
        registration = accounts.Registration(**data)
        return accounts.register(sessions(), registration=registration, issue=issue).user


@blp.route("/auth/login")
class Login(MethodView):
    @auth_attempts
    @login_attempts
    @blp.arguments(TaLoginSchema)
    @blp.response(200, TaTokenSchema)
    @answers(401, "Wrong email or password.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Email and password -> a bearer access token."""
        signin = core.password_sign_in(data, issue=issue)
        return _token(signin)


@blp.route("/auth/refresh")
class Refresh(MethodView):
    @auth_attempts
    @requires()
    @blp.response(200, TaTokenSchema)
    def post(self):
        """A new access token for the bearer's (still valid) one, in the same login."""
        signin = accounts.reissue(
            sessions(),
            principal=current_principal(),
            family_id=uuid.UUID(get_jwt()["fam"]),
            issue=issue,
        )
        return _token(signin)


# -- tasks ----------------------------------------------------------------------------------


@blp.route("/tasks")
class Tasks(MethodView):
    @requires("job:read")
    @blp.arguments(TaTaskListArgsSchema, location="query")
    @blp.response(200, TaTaskListSchema)
    def get(self, args: dict[str, Any]):
        """The tenant's tasks, newest first (filters: status, priority)."""
        priorities = args.get("priority")
        if priorities and "high" in priorities:
            priorities = [*priorities, "urgent"]
        filters = jobs.JobFilters(
            kind=JobKind.TASK,
            status=STATUS_WORDS.statuses(args["status"]) if args.get("status") else None,
            priority=priorities,
        )
        page = jobs.list_jobs(
            sessions(),
            principal=current_principal(),
            filters=filters,
            page=core.page_request(args),
        )
        return core.mapped(
            page, lambda job: present_task(jobs.JobDetail(job=job, phases=[], steps=[], events=[]))
        )

    @requires("job:create")
    @blp.arguments(TaskCreateSchema)
    @blp.response(201, TaTaskSchema)
    @job_submission
    def post(self, data: dict[str, Any]):
        """Create a task (201, ``pending``); it starts at once. The same job is
        ``GET /api/v1/jobs/{id}``."""
        submission = task_submission(data)
        detail = jobs.submit_job(sessions(), principal=current_principal(), submission=submission)
        location = DIALECT.url_for("TaskById", task_id=detail.job.id)
        return present_task(detail), 201, {"Location": location}


@blp.route("/tasks/<uuid:task_id>")
class TaskById(MethodView):
    @requires("job:read")
    @blp.response(200, TaTaskSchema)
    def get(self, task_id: uuid.UUID):
        """Task details and, once completed, its result."""
        detail = jobs.get_job(
            sessions(), principal=current_principal(), job_id=task_id, kind=JobKind.TASK
        )
        return present_task(detail)


# -- chat -----------------------------------------------------------------------------------

# Where the agent settings a conversation names are checked (orchestration.agents).
_AGENT_FIELDS = {
    "config.providers": "provider",
    "config.model_config.model": "model",
    "config.system_prompt": "system_prompt",
}
# POST /agents: the same checks, named by that body's fields (instructions, temperature).
_AGENT_BODY_FIELDS = {
    **_AGENT_FIELDS,
    "config.model_config.temperature": "temperature",
    "config.system_prompt": "instructions",
}


def _agent_field(exc: ValidationFailed, names: dict[str, str] = _AGENT_FIELDS) -> ValidationFailed:
    """A refused provider or model, named as the document's body names it."""
    for item in exc.details or []:
        name = str(item.get("field", "")) if isinstance(item, dict) else ""
        for prefix, field_name in names.items():
            if name.startswith(prefix):
                return field_error(field_name, item.get("message", exc.message))
    return exc


@blp.route("/chat/conversations")
class Conversations(MethodView):
    @requires("job:create")
    @blp.arguments(TaConversationCreateSchema)
    @blp.response(201, TaConversationSchema)
    def post(self, data: dict[str, Any]):
        """A conversation with its own provider, model and system prompt (kept as the
        conversation's agent, so replies run like every agent's)."""
        config: dict[str, Any] = {}
        if data.get("provider"):
            config["providers"] = [data["provider"]]
        if data.get("model"):
            config["model_config"] = {"model": data["model"]}
        if data.get("system_prompt") is not None:
            config["system_prompt"] = data["system_prompt"]
        title = data.get("title")
        agent = {"name": f"Chat: {title or 'conversation'}"[:200], "type": "chat", "config": config}
        try:
            return conversations.create_conversation(
                sessions(), principal=current_principal(), title=title,
                metadata=data.get("metadata"), new_agent=agent,
            )  # fmt: skip
        except ValidationFailed as exc:
            raise _agent_field(exc) from None


def _money(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The document's ``done`` carries ``cost`` as a number."""
    for event in events:
        if "cost" in event:
            event = {**event, "cost": float(event["cost"])}
        yield event


@blp.route("/chat/conversations/<uuid:conversation_id>/messages")
class Messages(MethodView):
    @requires("job:create")
    @blp.arguments(ChatMessageSchema)
    @blp.response(200, TaMessageSchema)
    @blp.alt_response(202, schema=TaMessageSchema, description="The reply is still being written")
    @blp.doc(**SSE_DOC)
    def post(self, data: dict[str, Any], conversation_id: uuid.UUID):
        """Send a message; the answer is the assistant's reply (``stream: true``: its
        Server-Sent Events ``start``, ``token``..., ``done`` with tokens_used and cost)."""
        principal = current_principal()
        wait = data.get("wait_seconds", get_settings().chat_wait_seconds)
        posted = conversations.post_message(
            sessions(), principal=principal, conversation_id=conversation_id,
            content=data["message"],
            options={"temperature": data.get("temperature"), "max_tokens": data.get("max_tokens")},
        )  # fmt: skip
        if data["stream"]:
            return _sse(
                _money(
                    conversations.reply_events(
                        sessions(), principal=principal, reply=posted.reply, seconds=wait
                    )
                )
            )
        reply = conversations.wait_for_reply(
            sessions(), principal=principal, reply_id=posted.reply.id, seconds=wait
        )
        return reply, (202 if reply.status in conversations.OPEN_REPLY else 200)


# -- agents ---------------------------------------------------------------------------------


@blp.route("/agents")
class Agents(MethodView):
    @requires("agent:write")
    @blp.arguments(AgentCreateSchema)
    @blp.response(201, TaAgentSchema)
    def post(self, data: dict[str, Any]):
        """Create an agent (instructions, provider, model, temperature, tools)."""
        try:
            return agents.create_agent(sessions(), principal=current_principal(), data=data)
        except ValidationFailed as exc:
            raise _agent_field(exc, _AGENT_BODY_FIELDS) from None


@blp.route("/agents/<uuid:agent_id>/execute")
class AgentExecute(MethodView):
    @requires("job:create")
    @blp.arguments(AgentExecuteSchema)
    @blp.response(200, TaRunSchema)
    @blp.alt_response(202, schema=TaRunSchema, description="Still running: poll /api/v1/jobs/{id}")
    @answers(402, "A blocking budget limit is already spent.")
    def post(self, data: dict[str, Any], agent_id: uuid.UUID):
        """Run the agent on an input and answer with its output (waits up to
        ``wait_seconds``, default 30)."""
        detail = agent_runs.run_agent(
            sessions(), principal=current_principal(), agent_id=agent_id,
            input_text=data["input"], task_type=data.get("task_type"), metadata=data["metadata"],
            wait_seconds=data["wait_seconds"], purpose="execute",
        )  # fmt: skip
        location = url_for("jobs.JobById", job_id=detail.job.id)
        status = 200 if detail.job.status in TERMINAL_STATUSES else 202
        return present_run(canonical_run(detail, location)), status, {"Location": location}


# -- webhooks -------------------------------------------------------------------------------


@blp.route("/webhooks")
class Webhooks(MethodView):
    @requires("webhook:admin")
    @blp.arguments(TaWebhookCreateSchema)
    @blp.response(201, TaWebhookSchema)
    def post(self, data: dict[str, Any]):
        """Subscribe a URL to event types, signed with ``secret`` (Standard Webhooks)."""
        view = webhooks.create_subscription(sessions(), principal=current_principal(), data=data)
        body = present_webhook(view)
        if data.get("secret") or data.get("secret_key"):
            body.pop("secret", None)
        return body
