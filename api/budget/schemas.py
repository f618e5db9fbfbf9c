"""Budget limits (seed 001 body) and the spending reports read from the ledger.

Money is exact: amounts come in as a string or a number and go out as a string.
Percentages follow seed 001: a fraction of the limit (0.25 is a quarter).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from marshmallow import Schema, fields, pre_dump, validate

from api.common.schemas import CalendarDate, ListArgsSchema, ListEnvelopeSchema, Money, max_places
from models import LimitAction, Period, ScopeType
from orchestration.budget_limits import LimitView
from orchestration.reports import GRANULARITIES, Bucket, PeriodSpend, SpendReport, Timeline

SCOPE_TYPES = [s.value for s in ScopeType]
PERIODS = [p.value for p in Period]
ACTIONS = [a.value for a in LimitAction]
MAX_AMOUNT = Decimal(1_000_000_000)
# Stored as Numeric(20, 10) and Numeric(5, 4): more digits are refused, not rounded.
AMOUNT_RULES = [validate.Range(min=0, min_inclusive=False, max=MAX_AMOUNT), max_places(10)]
THRESHOLD_RULES = [validate.Range(min=0, min_inclusive=False, max=1), max_places(4)]


class LimitUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    scope_type = fields.String(validate=validate.OneOf(SCOPE_TYPES))
    scope_id = fields.UUID(allow_none=True)
    amount_usd = fields.Decimal(validate=AMOUNT_RULES)
    period = fields.String(validate=validate.OneOf(PERIODS))
    alert_threshold = fields.Decimal(validate=THRESHOLD_RULES)
    action_on_exceed = fields.String(validate=validate.OneOf(ACTIONS))
    is_active = fields.Boolean()


class LimitCreateSchema(LimitUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    scope_type = fields.String(required=True, validate=validate.OneOf(SCOPE_TYPES))
    scope_id = fields.UUID(allow_none=True, load_default=None)
    amount_usd = fields.Decimal(required=True, validate=AMOUNT_RULES)
    period = fields.String(required=True, validate=validate.OneOf(PERIODS))
    alert_threshold = fields.Decimal(load_default=Decimal("0.8"), validate=THRESHOLD_RULES)
    action_on_exceed = fields.String(
        load_default=LimitAction.BLOCK.value, validate=validate.OneOf(ACTIONS)
    )
    is_active = fields.Boolean(load_default=True)


class LimitSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    scope_type = fields.String(metadata={"enum": SCOPE_TYPES})
    scope_id = fields.UUID(allow_none=True)
    scope_name = fields.String(allow_none=True)
    amount_usd = Money()
    period = fields.String(metadata={"enum": PERIODS})
    alert_threshold = fields.Float()
    action_on_exceed = fields.String(metadata={"enum": ACTIONS})
    is_active = fields.Boolean()
    window_start = fields.DateTime()
    window_end = fields.DateTime(allow_none=True)
    spent = Money()
    reserved = Money()
    remaining = Money()
    percentage = fields.Float()
    created_by_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: LimitView, **_: Any) -> dict[str, Any]:
        limit, window = view.limit, view.window
        return {
            "id": limit.id,
            "name": limit.name,
            "scope_type": limit.scope_type,
            "scope_id": limit.scope_id,
            "scope_name": view.scope_name,
            "amount_usd": limit.amount_usd,
            "period": limit.period,
            "alert_threshold": float(limit.alert_threshold),
            "action_on_exceed": limit.action_on_exceed,
            "is_active": limit.is_active,
            "window_start": window.window_start,
            "window_end": window.window_end,
            "spent": window.spent,
            "reserved": window.reserved,
            "remaining": view.remaining,
            "percentage": view.percentage,
            "created_by_id": limit.created_by_id,
            "created_at": limit.created_at,
            "updated_at": limit.updated_at,
        }


class LimitListArgsSchema(ListArgsSchema):
    scope_type = fields.String(validate=validate.OneOf(SCOPE_TYPES))
    period = fields.String(validate=validate.OneOf(PERIODS))
    action_on_exceed = fields.String(validate=validate.OneOf(ACTIONS))
    is_active = fields.Boolean()


class LimitListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(LimitSchema))


# -- reports ---------------------------------------------------------------------------------


class DateRangeArgsSchema(Schema):
    start_date = CalendarDate()
    end_date = CalendarDate()


class TimelineArgsSchema(DateRangeArgsSchema):
    granularity = fields.String(load_default="day", validate=validate.OneOf(GRANULARITIES))


class ScopeSchema(Schema):
    type = fields.String()
    id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)


class AlertSchema(Schema):
    """Seed 001's summary alert (``type`` is the level) with the budget_alert fields."""

    type = fields.String()
    level = fields.String()
    message = fields.String()
    scope = fields.Nested(ScopeSchema)
    current = fields.String()
    limit = fields.String()
    percentage = fields.Float()
    limit_id = fields.String()
    limit_name = fields.String()
    period = fields.String()
    action = fields.String()

    @pre_dump
    def _level_is_type(self, alert: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**alert, "type": alert["level"]}


class PeriodSpendSchema(Schema):
    spent = Money()
    limit = Money(allow_none=True)
    percentage = fields.Float(allow_none=True)
    start = fields.DateTime()
    end = fields.DateTime(allow_none=True)

    @pre_dump
    def _from_period(self, period: PeriodSpend, **_: Any) -> dict[str, Any]:
        return {
            "spent": period.spent,
            "limit": period.limit,
            "percentage": period.percentage,
            "start": period.start,
            "end": period.end,
        }


class BudgetSummarySchema(Schema):
    currency = fields.Constant("USD")
    today = fields.Nested(PeriodSpendSchema)
    week = fields.Nested(PeriodSpendSchema)
    month = fields.Nested(PeriodSpendSchema)
    limits = fields.List(fields.Nested(LimitSchema))
    alerts = fields.List(fields.Nested(AlertSchema))


def usage_fields(usage: Any) -> dict[str, Any]:
    return {
        "spent": usage.cost,
        "calls": usage.calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class _UsageFields(Schema):
    spent = Money()
    calls = fields.Integer()
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class _ChatFields(Schema):
    """Issue 11: the conversations in the row's spend (their cost is inside ``spent``)."""

    conversations = fields.Integer()
    conversation_messages = fields.Integer()
    conversation_cost = Money()


def chat_fields(chat: Any) -> dict[str, Any]:
    return {
        "conversations": chat.conversations,
        "conversation_messages": chat.messages,
        "conversation_cost": chat.cost,
    }


class ProjectSpendSchema(_UsageFields, _ChatFields):
    project_id = fields.UUID(allow_none=True)
    project_name = fields.String(allow_none=True)


class AgentSpendSchema(_UsageFields, _ChatFields):
    agent_id = fields.UUID(allow_none=True)
    agent_name = fields.String(allow_none=True)
    agent_type = fields.String(allow_none=True)


def _report(report: SpendReport, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "start_date": report.range.start,
        "end_date": report.range.end,
        "total_spent": report.total,
        "items": rows,
    }


class ProjectSpendReportSchema(Schema):
    start_date = fields.Date()
    end_date = fields.Date()
    total_spent = Money()
    items = fields.List(fields.Nested(ProjectSpendSchema))

    @pre_dump
    def _from_report(self, report: SpendReport, **_: Any) -> dict[str, Any]:
        rows = [
            {
                "project_id": r.id,
                "project_name": r.name,
                **usage_fields(r.usage),
                **chat_fields(r.chat),
            }
            for r in report.items
        ]
        return _report(report, rows)


class AgentSpendReportSchema(Schema):
    start_date = fields.Date()
    end_date = fields.Date()
    total_spent = Money()
    items = fields.List(fields.Nested(AgentSpendSchema))

    @pre_dump
    def _from_report(self, report: SpendReport, **_: Any) -> dict[str, Any]:
        rows = [
            {
                "agent_id": r.id,
                "agent_name": r.name,
                "agent_type": r.type,
                **usage_fields(r.usage),
                **chat_fields(r.chat),
            }  # fmt: skip
            for r in report.items
        ]
        return _report(report, rows)


class TimelineBucketSchema(_UsageFields):
    date = fields.Date()
    start_date = fields.Date()
    end_date = fields.Date()

    @pre_dump
    def _from_bucket(self, bucket: Bucket, **_: Any) -> dict[str, Any]:
        return {
            "date": bucket.start.date(),
            "start_date": bucket.first.date(),
            "end_date": (bucket.last - timedelta(days=1)).date(),  # inclusive, like the args
            **usage_fields(bucket.usage),
        }


class TimelineSchema(Schema):
    start_date = fields.Date()
    end_date = fields.Date()
    granularity = fields.String()
    total_spent = Money()
    items = fields.List(fields.Nested(TimelineBucketSchema))

    @pre_dump
    def _from_timeline(self, timeline: Timeline, **_: Any) -> dict[str, Any]:
        return {
            "start_date": timeline.range.start,
            "end_date": timeline.range.end,
            "granularity": timeline.granularity,
            "total_spent": timeline.total,
            "items": timeline.buckets,
        }
