"""/analytics: agent performance and usage over time, from the ledger and the jobs."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.analytics.schemas import (
    AgentAnalyticsArgsSchema,
    AgentAnalyticsSchema,
    PerformanceArgsSchema,
    PerformanceSchema,
    UsageAnalyticsArgsSchema,
    UsageAnalyticsSchema,
)
from api.security import current_principal, requires, sessions
from orchestration import performance, reports

blp = Blueprint("analytics", __name__, url_prefix="/api/v1/analytics", description="Analytics")


@blp.route("/agents")
class AgentAnalytics(MethodView):
    @requires()
    @blp.arguments(AgentAnalyticsArgsSchema, location="query")
    @blp.response(200, AgentAnalyticsSchema)
    def get(self, args: dict[str, Any]):
        """Per agent: provider calls, cost, average cost per call, jobs completed and
        success rate (all time unless start_date/end_date are given)."""
        return reports.agent_analytics(
            sessions(),
            principal=current_principal(),
            start=args.get("start_date"),
            end=args.get("end_date"),
        )


@blp.route("/usage")
class UsageAnalytics(MethodView):
    @requires()
    @blp.arguments(UsageAnalyticsArgsSchema, location="query")
    @blp.response(200, UsageAnalyticsSchema)
    def get(self, args: dict[str, Any]):
        """Seed 003: calls, tokens and cost per bucket over the last ``days`` (UTC), jobs
        as runs, and the busiest projects."""
        return reports.usage_analytics(
            sessions(),
            principal=current_principal(),
            days=args["days"],
            granularity=args["granularity"],
        )


@blp.route("/performance")
class PerformanceAnalytics(MethodView):
    @requires()
    @blp.arguments(PerformanceArgsSchema, location="query")
    @blp.response(200, PerformanceSchema)
    def get(self, args: dict[str, Any]):
        """Seed 003: the API's response-time percentiles, error rates, throughput and peak
        over the last ``minutes`` (measured on every request, deployment-wide), and the
        host's and answering process's resource usage."""
        return performance.performance_report(args["minutes"])
