"""Seed 001's bodies. Answers reuse the canonical schemas' presenters (one mapping from
the orchestration views) with the document's differences: money is a JSON number,
``is_active``, an agent's ``model_config`` at top level, lists paged by ``page``/``pages``.
Requests are the document's fields, mapped onto the canonical commands' data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema

from api.agents.schemas import AgentSchema, AgentStatsSchema
from api.analytics.schemas import AgentMetricsSchema, AgentPerformanceSchema
from api.budget.schemas import (
    AgentSpendSchema,
    AlertSchema,
    LimitSchema,
    PeriodSpendSchema,
    ProjectSpendSchema,
    TimelineBucketSchema,
    TimelineSchema,
    _report,
    chat_fields,
    usage_fields,
)
from api.common.schemas import CalendarDate
from api.conversations.schemas import (
    TYPES as CONVERSATION_TYPES,
)
from api.conversations.schemas import (
    ConversationMessageSchema,
    ConversationSchema,
)
from api.notifications.schemas import NotificationSchema
from api.project_issues.routes import ProjectIssueSchema
from api.project_tasks.schemas import ProjectTaskSchema
from api.projects.schemas import GITHUB_ID, GITHUB_REPO, ProjectSchema, ProjectStatsSchema
from api.pull_requests.routes import PullRequestSchema
from orchestration.listing import MAX_LIMIT, MAX_OFFSET, Page, PageRequest
from orchestration.project_work import TASK_STATUSES
from orchestration.reports import GRANULARITIES, SpendReport

AGENT_TYPES = ("architect", "coder", "tester", "reviewer", "orchestrator")
CONVERSATION_STATUSES = ("active", "paused", "completed")
MAX_CC_LIMIT = min(100, MAX_LIMIT)


class Number(fields.Float):
    """Money as the document writes it: a JSON number (``12.50``); Baton keeps it exact."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            value = Decimal(value)
        return super()._serialize(value, attr, obj, **kwargs)


# -- lists ----------------------------------------------------------------------------------


class PageArgsSchema(Schema):
    """``?page=&limit=`` (default 1 and 20, limit at most 100)."""

    page = fields.Integer(
        load_default=1, validate=validate.Range(min=1, max=MAX_OFFSET // MAX_CC_LIMIT)
    )
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_CC_LIMIT))


def page_request(args: dict[str, Any]) -> PageRequest:
    return PageRequest(limit=args["limit"], offset=(args["page"] - 1) * args["limit"])


def paged(page: Page[Any], present: Any = None) -> dict[str, Any]:
    """The document's envelope: ``items``, ``total``, ``page``, ``pages``."""
    items = [present(item) for item in page.items] if present else page.items
    return {
        "items": items,
        "total": page.total,
        "page": page.offset // page.limit + 1,
        "pages": math.ceil(page.total / page.limit) if page.total else 0,
    }


def envelope(item_schema: type[Schema], name: str) -> type[Schema]:
    return type(
        name,
        (Schema,),
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "total": fields.Integer(required=True),
            "page": fields.Integer(required=True),
            "pages": fields.Integer(required=True),
        },
    )


# -- auth -----------------------------------------------------------------------------------


class CCLoginSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=1000))


class CCTwoFactorVerifySchema(Schema):
    temp_token = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))


class CCRefreshSchema(Schema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=4096))


class CCTokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    requires_2fa = fields.Boolean(required=True)
    # With requires_2fa: the token /auth/2fa/verify takes.
    temp_token = fields.String()


# -- projects -------------------------------------------------------------------------------


class CCProjectStatsSchema(ProjectStatsSchema):
    today_cost = Number()


class CCProjectSchema(ProjectSchema):
    is_active = fields.Boolean()
    stats = fields.Nested(CCProjectStatsSchema)

    @pre_dump
    def _from_view(self, view: Any, **kwargs: Any) -> dict[str, Any]:
        out = super()._from_view(view, **kwargs)
        return {**out, "is_active": out["status"] == "active"}


CCProjectListSchema = envelope(CCProjectSchema, "CCProjectListSchema")


class CCProjectListArgsSchema(PageArgsSchema):
    is_active = fields.Boolean()


class CCProjectUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    github_repo = fields.String(
        allow_none=True, validate=validate.Regexp(GITHUB_REPO, error="must be owner/repo")
    )
    github_app_id = fields.String(allow_none=True, validate=GITHUB_ID)
    github_installation_id = fields.String(allow_none=True, validate=GITHUB_ID)
    is_active = fields.Boolean()


class CCProjectCreateSchema(CCProjectUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


def project_changes(data: dict[str, Any]) -> dict[str, Any]:
    """``is_active`` is Baton's project status: active, or archived."""
    changes = dict(data)
    if "is_active" in changes:
        changes["status"] = "active" if changes.pop("is_active") else "archived"
    return changes


# -- agents ---------------------------------------------------------------------------------


class CCModelConfigSchema(Schema):
    model = fields.String(validate=validate.Length(min=1, max=120))
    temperature = fields.Float(validate=validate.Range(min=0, max=2))
    max_tokens = fields.Integer(strict=True, validate=validate.Range(min=100, max=128_000))


class CCAgentUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    type = fields.String(validate=validate.OneOf(AGENT_TYPES))
    model_config = fields.Nested(CCModelConfigSchema)
    system_prompt = fields.String(allow_none=True, validate=validate.Length(max=50_000))
    rules_file_path = fields.String(allow_none=True, validate=validate.Length(max=500))
    is_active = fields.Boolean()


class CCAgentCreateSchema(CCAgentUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(required=True, validate=validate.OneOf(AGENT_TYPES))


def agent_data(data: dict[str, Any]) -> dict[str, Any]:
    """The document's agent fields -> the canonical command's (config holds the model)."""
    out: dict[str, Any] = {k: data[k] for k in ("name", "type") if k in data}
    config = {k: data[k] for k in ("model_config", "system_prompt", "rules_file_path") if k in data}
    if config:
        out["config"] = config
    if "is_active" in data:
        out["status"] = "active" if data["is_active"] else "inactive"
    return out


class CCAgentStatsSchema(AgentStatsSchema):
    cost_today = Number()


class CCModelConfigOutSchema(Schema):
    model = fields.String(allow_none=True)
    temperature = fields.Float(allow_none=True)
    max_tokens = fields.Integer(allow_none=True)


class CCAgentSchema(AgentSchema):
    model_config = fields.Nested(CCModelConfigOutSchema)
    system_prompt = fields.String(allow_none=True)
    rules_file_path = fields.String(allow_none=True)
    stats = fields.Nested(CCAgentStatsSchema)

    @pre_dump
    def _from_view(self, view: Any, **kwargs: Any) -> dict[str, Any]:
        out = super()._from_view(view, **kwargs)
        config = view.agent.config or {}
        return {
            **out,
            "model_config": config.get("model_config") or {},
            "system_prompt": config.get("system_prompt"),
            "rules_file_path": config.get("rules_file_path"),
        }


CCAgentListSchema = envelope(CCAgentSchema, "CCAgentListSchema")


class CCResetSchema(Schema):
    agent_id = fields.UUID()
    conversations_ended = fields.Integer()
    memory_cleared = fields.Boolean()


# -- conversations --------------------------------------------------------------------------


class CCMessageSchema(ConversationMessageSchema):
    cost_usd = Number()
    cost = Number()


class CCConversationSchema(ConversationSchema):
    messages = fields.List(fields.Nested(CCMessageSchema))


CCConversationListSchema = envelope(CCConversationSchema, "CCConversationListSchema")


class CCConversationListArgsSchema(PageArgsSchema):
    type = fields.String(validate=validate.OneOf(CONVERSATION_TYPES))
    status = fields.String(validate=validate.OneOf(CONVERSATION_STATUSES))


class CCConversationCreateSchema(Schema):
    title = fields.String(validate=validate.Length(min=1, max=300))
    type = fields.String(load_default="general", validate=validate.OneOf(CONVERSATION_TYPES))
    agent_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=20))
    issue_id = fields.UUID(allow_none=True)


class CCConversationArgsSchema(Schema):
    before = fields.UUID(metadata={"description": "a message id: the page before it"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_CC_LIMIT))


class CCMessageCreateSchema(Schema):
    content = fields.String(required=True)
    reply_to = fields.UUID(allow_none=True)


class CCPostedSchema(CCMessageSchema):
    """The message sent (the document's message object), with the agent's reply it
    started (``reply``: written as the agent answers; Socket.IO ``message`` events)."""

    reply = fields.Nested(CCMessageSchema, allow_none=True)

    @pre_dump
    def _from_row(self, posted: Any, **kwargs: Any) -> dict[str, Any]:
        return {
            **super()._from_row(posted.message, **kwargs),
            "reply": posted.reply,
        }


# -- issues, tasks, pull requests -----------------------------------------------------------


CCIssueListSchema = envelope(ProjectIssueSchema, "CCIssueListSchema")
CCTaskListSchema = envelope(ProjectTaskSchema, "CCTaskListSchema")
CCPullRequestListSchema = envelope(PullRequestSchema, "CCPullRequestListSchema")


class CCIssueListArgsSchema(PageArgsSchema):
    state = fields.String(load_default="open", validate=validate.OneOf(["open", "closed", "all"]))
    label = fields.String(validate=validate.Length(min=1, max=100))


class CCPullRequestListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(["open", "closed", "merged", "all"]))


class CCTaskListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(TASK_STATUSES))
    assigned_to = fields.UUID()
    issue_id = fields.UUID()


class CCTaskAssignSchema(Schema):
    """The agent: ``agent_id`` (or ``assigned_to_agent_id``, the task's own field name)."""

    agent_id = fields.UUID()
    assigned_to_agent_id = fields.UUID()

    @validates_schema
    def _one_agent(self, data: dict[str, Any], **_: Any) -> None:
        given = [k for k in ("agent_id", "assigned_to_agent_id") if k in data]
        if len(given) != 1:
            raise ValidationError("give the agent as agent_id", "agent_id")


class CCRejectSchema(Schema):
    feedback = fields.String(required=True, validate=validate.Length(min=1, max=20_000))


# -- budget ---------------------------------------------------------------------------------


class CCLimitSchema(LimitSchema):
    amount_usd = Number()
    spent = Number()
    reserved = Number()
    remaining = Number()


CCLimitListSchema = envelope(CCLimitSchema, "CCLimitListSchema")


class CCLimitListArgsSchema(PageArgsSchema):
    pass


class CCPeriodSpendSchema(PeriodSpendSchema):
    spent = Number()
    limit = Number(allow_none=True)


class CCAlertSchema(AlertSchema):
    current = Number()
    limit = Number()


class CCBudgetSummarySchema(Schema):
    today = fields.Nested(CCPeriodSpendSchema)
    week = fields.Nested(CCPeriodSpendSchema)
    month = fields.Nested(CCPeriodSpendSchema)
    alerts = fields.List(fields.Nested(CCAlertSchema))
    currency = fields.Constant("USD")


class _CCUsage(Schema):
    spent = Number()
    calls = fields.Integer()
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    conversation_cost = Number()


class CCProjectSpendSchema(ProjectSpendSchema, _CCUsage):
    pass


class CCAgentSpendSchema(AgentSpendSchema, _CCUsage):
    pass


class CCDateRangeArgsSchema(Schema):
    start_date = CalendarDate()
    end_date = CalendarDate()


class CCTimelineArgsSchema(CCDateRangeArgsSchema):
    granularity = fields.String(load_default="day", validate=validate.OneOf(GRANULARITIES))


class CCSpendArgsSchema(CCDateRangeArgsSchema, PageArgsSchema):
    """By project/agent: the date range, and the document's ``page``/``limit`` ("All
    list endpoints use offset-based pagination")."""


@dataclass(frozen=True)
class SpendPage:
    """A spend report and the page of its rows asked for."""

    report: SpendReport
    page: PageRequest


class _CCSpendPageSchema(Schema):
    """``start_date, end_date, total_spent`` (the whole range's) and the page's
    ``items, total, page, pages``."""

    start_date = fields.Date()
    end_date = fields.Date()
    total_spent = Number()
    total = fields.Integer()
    page = fields.Integer()
    pages = fields.Integer()

    def _paged(self, found: SpendPage, rows: list[dict[str, Any]]) -> dict[str, Any]:
        offset, limit = found.page.offset, found.page.limit
        window = Page(
            items=rows[offset : offset + limit], total=len(rows), limit=limit, offset=offset
        )
        return {**_report(found.report, rows), **paged(window)}


class CCProjectSpendReportSchema(_CCSpendPageSchema):
    items = fields.List(fields.Nested(CCProjectSpendSchema))

    @pre_dump
    def _from_report(self, found: SpendPage, **_: Any) -> dict[str, Any]:
        rows = [
            {"project_id": r.id, "project_name": r.name, **usage_fields(r.usage),
             **chat_fields(r.chat)}
            for r in found.report.items
        ]  # fmt: skip
        return self._paged(found, rows)


class CCAgentSpendReportSchema(_CCSpendPageSchema):
    items = fields.List(fields.Nested(CCAgentSpendSchema))

    @pre_dump
    def _from_report(self, found: SpendPage, **_: Any) -> dict[str, Any]:
        rows = [
            {"agent_id": r.id, "agent_name": r.name, "agent_type": r.type,
             **usage_fields(r.usage), **chat_fields(r.chat)}
            for r in found.report.items
        ]  # fmt: skip
        return self._paged(found, rows)


class CCTimelineBucketSchema(TimelineBucketSchema):
    spent = Number()


class CCTimelineSchema(TimelineSchema):
    """The canonical timeline (its pre_dump reads the Timeline) with money as numbers."""

    total_spent = Number()
    items = fields.List(fields.Nested(CCTimelineBucketSchema))


class CCAgentMetricsSchema(AgentMetricsSchema):
    conversation_cost = Number()
    total_cost = Number()
    avg_cost_per_message = Number(allow_none=True)


class CCAgentPerformanceSchema(AgentPerformanceSchema):
    metrics = fields.Nested(CCAgentMetricsSchema)


class CCAgentAnalyticsSchema(Schema):
    agents = fields.List(fields.Nested(CCAgentPerformanceSchema))

    @pre_dump
    def _wrap(self, rows: list[Any], **_: Any) -> dict[str, Any]:
        return {"agents": rows}


# -- notifications, emergency ---------------------------------------------------------------


CCNotificationListSchema = envelope(NotificationSchema, "CCNotificationListSchema")


class CCNotificationListArgsSchema(PageArgsSchema):
    is_read = fields.Boolean()
    severity = fields.String(validate=validate.OneOf(["info", "warning", "critical"]))


class CCReadAllSchema(Schema):
    message = fields.String()
    marked_read = fields.Integer()


class CCPauseAllSchema(Schema):
    paused_agents = fields.Integer(required=True)
    active_conversations = fields.Integer(required=True)
    message = fields.String(required=True)


class CCResumeAllSchema(Schema):
    resumed_agents = fields.Integer(required=True)
    message = fields.String(required=True)


class CCGitHubReceiptSchema(Schema):
    status = fields.String(metadata={"enum": ["processed", "duplicate", "ignored"]})
    event = fields.String()
    delivery_id = fields.String()
    projects = fields.Integer()
    reason = fields.String(allow_none=True)
