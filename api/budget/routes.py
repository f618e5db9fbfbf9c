"""/budget: limits CRUD (admins and managers write, everyone reads) and spending reports."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.budget.schemas import (
    AgentSpendReportSchema,
    BudgetSummarySchema,
    DateRangeArgsSchema,
    LimitCreateSchema,
    LimitListArgsSchema,
    LimitListSchema,
    LimitSchema,
    LimitUpdateSchema,
    ProjectSpendReportSchema,
    TimelineArgsSchema,
    TimelineSchema,
)
from api.common.schemas import page_request
from api.security import current_principal, requires, sessions
from orchestration import budget_limits, reports

blp = Blueprint("budget", __name__, url_prefix="/api/v1/budget", description="Budget")


@blp.route("/limits")
class Limits(MethodView):
    @requires()
    @blp.arguments(LimitListArgsSchema, location="query")
    @blp.response(200, LimitListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's limits, each with its current window (filters: scope_type,
        period, action_on_exceed, is_active; sort)."""
        filters = budget_limits.LimitFilters(
            scope_type=args.get("scope_type"),
            period=args.get("period"),
            action_on_exceed=args.get("action_on_exceed"),
            is_active=args.get("is_active"),
        )
        # The list schema dumps the Page (items, total, limit, offset) itself.
        return budget_limits.list_limits(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )

    @requires("budget:write")
    @blp.arguments(LimitCreateSchema)
    @blp.response(201, LimitSchema)
    def post(self, data: dict[str, Any]):
        """Create a limit; its window starts from what the scope already spent."""
        return budget_limits.create_limit(sessions(), principal=current_principal(), data=data)


@blp.route("/limits/<uuid:limit_id>")
class LimitById(MethodView):
    @requires()
    @blp.response(200, LimitSchema)
    def get(self, limit_id: uuid.UUID):
        """A limit with its current window's spent, reserved, remaining and percentage."""
        return budget_limits.get_limit(sessions(), principal=current_principal(), limit_id=limit_id)

    @requires("budget:write")
    @blp.arguments(LimitUpdateSchema)
    @blp.response(200, LimitSchema)
    def put(self, changes: dict[str, Any], limit_id: uuid.UUID):
        """Update some fields (PATCH does the same); scope and period cannot change."""
        return budget_limits.update_limit(
            sessions(), principal=current_principal(), limit_id=limit_id, changes=changes
        )

    @requires("budget:write")
    @blp.arguments(LimitUpdateSchema)
    @blp.response(200, LimitSchema)
    def patch(self, changes: dict[str, Any], limit_id: uuid.UUID):
        """Seed 001 spelling of the update."""
        return budget_limits.update_limit(
            sessions(), principal=current_principal(), limit_id=limit_id, changes=changes
        )

    @requires("budget:write")
    @blp.response(204)
    def delete(self, limit_id: uuid.UUID):
        """Delete a limit: it stops applying; calls already holding on it settle as usual."""
        budget_limits.delete_limit(sessions(), principal=current_principal(), limit_id=limit_id)


@blp.route("/summary")
class Summary(MethodView):
    @requires()
    @blp.response(200, BudgetSummarySchema)
    def get(self):
        """Today / this ISO week / this month (UTC) against organization limits, and alerts."""
        return reports.budget_summary(sessions(), principal=current_principal())


@blp.route("/by-project")
class ByProject(MethodView):
    @requires()
    @blp.arguments(DateRangeArgsSchema, location="query")
    @blp.response(200, ProjectSpendReportSchema)
    def get(self, args: dict[str, Any]):
        """Spend per project over whole UTC days (default: this month to date)."""
        return reports.spend_by(
            sessions(),
            principal=current_principal(),
            dimension="project",
            start=args.get("start_date"),
            end=args.get("end_date"),
        )


@blp.route("/by-agent")
class ByAgent(MethodView):
    @requires()
    @blp.arguments(DateRangeArgsSchema, location="query")
    @blp.response(200, AgentSpendReportSchema)
    def get(self, args: dict[str, Any]):
        """Spend per agent over whole UTC days (default: this month to date)."""
        return reports.spend_by(
            sessions(),
            principal=current_principal(),
            dimension="agent",
            start=args.get("start_date"),
            end=args.get("end_date"),
        )


@blp.route("/timeline")
class TimelineView(MethodView):
    @requires()
    @blp.arguments(TimelineArgsSchema, location="query")
    @blp.response(200, TimelineSchema)
    def get(self, args: dict[str, Any]):
        """Spend per UTC day, ISO week or month, zero buckets included (default: the last
        30 days by day)."""
        return reports.timeline(
            sessions(),
            principal=current_principal(),
            start=args.get("start_date"),
            end=args.get("end_date"),
            granularity=args["granularity"],
        )
