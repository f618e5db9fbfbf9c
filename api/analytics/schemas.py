"""Analytics: agent performance (seed 001) and usage (seed 003), read from the ledger."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate

from api.budget.schemas import DateRangeArgsSchema
from api.common.schemas import Money
from orchestration.reports import USAGE_GRANULARITIES, AgentMetrics, UsageAnalytics

AgentAnalyticsArgsSchema = DateRangeArgsSchema


class UsageAnalyticsArgsSchema(Schema):
    days = fields.Integer(load_default=30, validate=validate.Range(min=1, max=366))
    granularity = fields.String(load_default="day", validate=validate.OneOf(USAGE_GRANULARITIES))


class AgentMetricsSchema(Schema):
    total_messages = fields.Integer()  # provider calls (a reply in a conversation is one)
    conversations = fields.Integer()
    conversation_messages = fields.Integer()  # replies the agent wrote in conversations
    conversation_cost = Money()
    total_tokens = fields.Integer()
    total_cost = Money()
    avg_cost_per_message = Money(allow_none=True)
    tasks_completed = fields.Integer()
    tasks_failed = fields.Integer()
    success_rate = fields.Float(allow_none=True)


class AgentPerformanceSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    type = fields.String()
    status = fields.String()
    project_id = fields.UUID(allow_none=True)
    metrics = fields.Nested(AgentMetricsSchema)

    @pre_dump
    def _from_metrics(self, row: AgentMetrics, **_: Any) -> dict[str, Any]:
        agent = row.agent
        return {
            "id": agent.id,
            "name": agent.name,
            "type": agent.type,
            "status": agent.status,
            "project_id": agent.project_id,
            "metrics": {
                "total_messages": row.usage.calls,
                "conversations": row.chat.conversations,
                "conversation_messages": row.chat.messages,
                "conversation_cost": row.chat.cost,
                "total_tokens": row.usage.total_tokens,
                "total_cost": row.usage.cost,
                "avg_cost_per_message": row.avg_cost_per_message,
                "tasks_completed": row.tasks_completed,
                "tasks_failed": row.tasks_failed,
                "success_rate": row.success_rate,
            },
        }


class AgentAnalyticsSchema(Schema):
    agents = fields.List(fields.Nested(AgentPerformanceSchema))

    @pre_dump
    def _wrap(self, rows: list[AgentMetrics], **_: Any) -> dict[str, Any]:
        return {"agents": rows}


class ApiUsageSchema(Schema):
    date = fields.String()
    requests = fields.Integer()
    tokens = fields.Integer()
    cost = Money()
    avg_response_time = fields.Integer(allow_none=True)


class RunsSummarySchema(Schema):
    total_runs = fields.Integer()
    completed_runs = fields.Integer()
    failed_runs = fields.Integer()
    cancelled_runs = fields.Integer()
    avg_execution_time = fields.Integer(allow_none=True)
    success_rate = fields.Float(allow_none=True)


class TopProjectSchema(Schema):
    project_id = fields.UUID()
    project_name = fields.String()
    run_count = fields.Integer()
    success_rate = fields.Float(allow_none=True)


class UsageAnalyticsSchema(Schema):
    days = fields.Integer()
    granularity = fields.String()
    api_usage = fields.List(fields.Nested(ApiUsageSchema))
    runs_summary = fields.Nested(RunsSummarySchema)
    top_projects = fields.List(fields.Nested(TopProjectSchema))
    integration_usage = fields.Dict()

    @pre_dump
    def _from_analytics(self, report: UsageAnalytics, **_: Any) -> dict[str, Any]:
        hourly = report.granularity == "hour"
        return {
            "days": report.days,
            "granularity": report.granularity,
            "api_usage": [
                {
                    "date": (
                        b.start.isoformat().replace("+00:00", "Z")
                        if hourly
                        else b.start.date().isoformat()
                    ),
                    "requests": b.usage.calls,
                    "tokens": b.usage.total_tokens,
                    "cost": b.usage.cost,
                    "avg_response_time": b.usage.avg_response_ms,
                }
                for b in report.buckets
            ],
            "runs_summary": {
                "total_runs": report.runs.total,
                "completed_runs": report.runs.completed,
                "failed_runs": report.runs.failed,
                "cancelled_runs": report.runs.cancelled,
                "avg_execution_time": report.runs.avg_execution_ms,
                "success_rate": report.runs.success_rate,
            },
            "top_projects": [
                {
                    "project_id": p.project_id,
                    "project_name": p.name,
                    "run_count": p.runs,
                    "success_rate": p.success_rate,
                }
                for p in report.top_projects
            ],
            # Baton runs no file-system, git or deployment integrations (docs/decisions.md).
            "integration_usage": {},
        }


class PerformanceArgsSchema(Schema):
    minutes = fields.Integer(load_default=60, validate=validate.Range(min=1, max=120))


class PerformanceSchema(Schema):
    """Seed 003's ``/analytics/performance``: milliseconds, percentages, requests/s."""

    window_minutes = fields.Integer()
    requests = fields.Integer()
    response_times = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True))
    error_rates = fields.Dict(keys=fields.String(), values=fields.Float())
    throughput = fields.Dict(keys=fields.String(), values=fields.Float())
    resource_usage = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True))
    process = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
