"""Seed 003's endpoints: each view maps the document's request, calls the one
orchestration function the canonical view calls, and shapes the document's answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask.views import MethodView
from flask_jwt_extended import get_jwt

from api import quotas
from api.analytics.schemas import (
    PerformanceArgsSchema,
    PerformanceSchema,
    UsageAnalyticsArgsSchema,
)
from api.auth.routes import login_attempts, refresh_claims
from api.auth.schemas import LoginSchema, LogoutSchema, RefreshSchema
from api.common.openapi import answers, job_submission
from api.common.schemas import page_request
from api.compat import core
from api.compat.orchestrator import DIALECT, STATUS_WORDS
from api.compat.orchestrator.schemas import (
    OrchestratorCancelledSchema,
    OrchestratorListArgsSchema,
    OrchestratorMessageSchema,
    OrchestratorOrchestrateSchema,
    OrchestratorOrganizationUpdateSchema,
    OrchestratorProjectCreateSchema,
    OrchestratorProjectDetailSchema,
    OrchestratorProjectListArgsSchema,
    OrchestratorProjectListSchema,
    OrchestratorProjectUpdateSchema,
    OrchestratorRunDetailSchema,
    OrchestratorRunListArgsSchema,
    OrchestratorRunListSchema,
    OrchestratorStartedSchema,
    OrchestratorTemplateListArgsSchema,
    OrchestratorTemplateListSchema,
    OrchestratorTokenSchema,
    OrchestratorUsageSchema,
    OrchestratorWebhookCreateSchema,
    OrchestratorWebhookListSchema,
    OrchestratorWebhookUpdateSchema,
)
from api.jobs.views import submission_from
from api.organizations.schemas import OrganizationSchema
from api.security import current_principal, requires, sessions
from api.templates.schemas import TemplateCreateSchema, TemplateSchema
from api.webhooks.schemas import WebhookSchema, present_webhook
from models import JobKind
from orchestration import (
    accounts,
    estimates,
    jobs,
    performance,
    projects,
    reports,
    templates,
    webhooks,
)
from orchestration.errors import AuthenticationRequired, field_error

blp = DIALECT.blueprint

# Like the canonical routes: reading the quota and signing out spend no quota.
quotas.FREE_ENDPOINTS.update(
    {("GET", f"{DIALECT.name}.CurrentOrganization"), ("POST", f"{DIALECT.name}.Logout")}
)

# The canonical token pair and claims (its roles are Baton's: admin, manager, member, viewer).
issue = core.token_issuer()


def _signed_in(signin: accounts.SignIn | accounts.SecondFactorRequired) -> dict[str, Any]:
    if isinstance(signin, accounts.SecondFactorRequired):
        raise AuthenticationRequired(
            "This account signs in with two factors: use /api/v1/auth/login"
        )
    return {
        "access_token": signin.tokens.access_token,
        "refresh_token": signin.tokens.refresh_token,
        "token_type": "bearer",
        "expires_in": signin.tokens.expires_in,
        "user": signin.user,
    }


# -- 2.1 authentication -------------------------------------------------------------------------


@blp.route("/auth/login")
class Login(MethodView):
    @login_attempts
    @blp.arguments(LoginSchema)
    @blp.response(200, OrchestratorTokenSchema)
    @answers(401, "Wrong email or password.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Email (or username) and password -> access and refresh tokens and the user."""
        return _signed_in(core.password_sign_in(data, issue=issue))


@blp.route("/auth/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, OrchestratorTokenSchema)
    @answers(401, "The refresh token is invalid, expired or already spent.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Rotate a refresh token (answers like login); a spent one revokes its login."""
        claims = refresh_claims(data["refresh_token"])
        return _signed_in(accounts.refresh(sessions(), jti=claims["jti"], issue=issue))


@blp.route("/auth/logout")
class Logout(MethodView):
    @requires()
    @blp.arguments(LogoutSchema)
    @blp.response(200, OrchestratorMessageSchema)
    def post(self, data: dict[str, Any]):
        """Revoke the presented access token and, if given, the refresh token's login."""
        access = get_jwt()
        refresh_jti = None
        if data.get("refresh_token"):
            try:
                refresh_jti = refresh_claims(data["refresh_token"])["jti"]
            except AuthenticationRequired as exc:
                raise field_error("refresh_token", "is not a valid refresh token") from exc
        accounts.logout(
            sessions(),
            principal=current_principal(),
            access_jti=access["jti"],
            access_expires_at=datetime.fromtimestamp(access["exp"], UTC),
            refresh_jti=refresh_jti,
        )
        return {"message": "Successfully logged out"}


# -- 2.2 organizations --------------------------------------------------------------------------


@blp.route("/organizations/current")
class CurrentOrganization(MethodView):
    @requires()
    @blp.response(200, OrganizationSchema)
    def get(self):
        """The caller's organization, its tier and this month's API quota use."""
        return accounts.get_organization(sessions(), principal=current_principal())

    @requires("organization:write")
    @blp.arguments(OrchestratorOrganizationUpdateSchema)
    @blp.response(200, OrganizationSchema)
    def put(self, data: dict[str, Any]):
        """Rename the organization or change its settings (admins)."""
        return accounts.update_organization(
            sessions(),
            principal=current_principal(),
            name=data.get("name"),
            settings=data.get("settings"),
        )


# -- 2.3 projects -------------------------------------------------------------------------------


@blp.route("/projects")
class Projects(MethodView):
    @requires()
    @blp.arguments(OrchestratorProjectListArgsSchema, location="query")
    @blp.response(200, OrchestratorProjectListSchema)
    def get(self, args: dict[str, Any]):
        """Projects (filters: status, priority, search; sort; limit/offset or cursor)."""
        filters = projects.ProjectFilters(
            status=args.get("status"), priority=args.get("priority"), search=args.get("search")
        )
        return projects.list_projects(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )

    @requires("project:write")
    @blp.arguments(OrchestratorProjectCreateSchema)
    @blp.response(201, OrchestratorProjectDetailSchema)
    def post(self, data: dict[str, Any]):
        """Create a project (status ``active``)."""
        return projects.create_project(sessions(), principal=current_principal(), data=data)


@blp.route("/projects/<uuid:project_id>")
class ProjectById(MethodView):
    @requires()
    @blp.response(200, OrchestratorProjectDetailSchema)
    def get(self, project_id: uuid.UUID):
        """A project with its creator and latest orchestration runs."""
        return projects.get_project(
            sessions(), principal=current_principal(), project_id=project_id
        )

    @requires("project:write")
    @blp.arguments(OrchestratorProjectUpdateSchema)
    @blp.response(200, OrchestratorProjectDetailSchema)
    def put(self, changes: dict[str, Any], project_id: uuid.UUID):
        """Update the fields given."""
        return projects.update_project(
            sessions(), principal=current_principal(), project_id=project_id, changes=changes
        )

    @requires("project:write")
    @blp.response(200, OrchestratorMessageSchema)
    def delete(self, project_id: uuid.UUID):
        """Delete a project; its runs stay, detached from it."""
        projects.delete_project(sessions(), principal=current_principal(), project_id=project_id)
        return {"message": "Project deleted successfully"}


# -- 2.4 orchestration --------------------------------------------------------------------------


@blp.route("/orchestrate")
class Orchestrate(MethodView):
    @requires("job:create")
    @blp.arguments(OrchestratorOrchestrateSchema)
    @blp.response(201, OrchestratorStartedSchema)
    @answers(404, "project_id or template_id names no project or template of the organization.")
    @job_submission
    def post(self, data: dict[str, Any]):
        """Start a run (201, ``started``): phases from custom_phases, a template, or the
        default five, each with an estimated duration."""
        submission = submission_from(
            {**data, "priority": "medium"},
            kind=JobKind.ORCHESTRATION,
            title=data["topic"][:200],
            job_input={"topic": data["topic"], "integration_enabled": data["integration_enabled"]},
            template_id=data.get("template_id"),
            custom_phases=data.get("custom_phases"),
        )
        run = estimates.submit_estimated(
            sessions(), principal=current_principal(), submission=submission
        )
        location = DIALECT.url_for("RunById", run_id=run.detail.job.id)
        return run, 201, {"Location": location}


@blp.route("/orchestration")
class Runs(MethodView):
    @requires("job:read")
    @blp.arguments(OrchestratorRunListArgsSchema, location="query")
    @blp.response(200, OrchestratorRunListSchema)
    def get(self, args: dict[str, Any]):
        """Runs, newest first (filters: project_id, status)."""
        filters = jobs.JobFilters(
            kind=JobKind.ORCHESTRATION,
            project_id=args.get("project_id"),
            status=STATUS_WORDS.statuses(args["status"]) if args.get("status") else None,
        )
        return jobs.list_jobs(
            sessions(),
            principal=current_principal(),
            filters=filters,
            page=page_request(args),
            with_phases=True,
        )


@blp.route("/orchestration/<uuid:run_id>")
class RunById(MethodView):
    @requires("job:read")
    @blp.response(200, OrchestratorRunDetailSchema)
    def get(self, run_id: uuid.UUID):
        """The run and its phases: response text, token usage and timings."""
        return jobs.get_job(
            sessions(), principal=current_principal(), job_id=run_id, kind=JobKind.ORCHESTRATION
        )


@blp.route("/orchestration/<uuid:run_id>/cancel")
class CancelRun(MethodView):
    @requires("job:cancel")
    @blp.response(200, OrchestratorCancelledSchema)
    @answers(409, "The run has already finished.")
    def post(self, run_id: uuid.UUID):
        """Cancel a run before its next phase; a finished run answers 409."""
        job = jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=run_id, kind=JobKind.ORCHESTRATION
        )
        return {
            "message": "Orchestration cancelled successfully",
            "run_id": job.id,
            "status": STATUS_WORDS.word(job.status),
        }


# -- 2.5 templates ------------------------------------------------------------------------------


@blp.route("/templates")
class Templates(MethodView):
    @requires()
    @blp.arguments(OrchestratorTemplateListArgsSchema, location="query")
    @blp.response(200, OrchestratorTemplateListSchema)
    def get(self, args: dict[str, Any]):
        """Own, built-in and public templates (filters: category, is_public, search)."""
        filters = templates.TemplateFilters(
            category=args.get("category"),
            is_public=args.get("is_public"),
            search=args.get("search"),
        )
        return templates.list_templates(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )

    @requires("template:write")
    @blp.arguments(TemplateCreateSchema)
    @blp.response(201, TemplateSchema)
    def post(self, data: dict[str, Any]):
        """Create a template of phases for orchestrations."""
        return templates.create_template(sessions(), principal=current_principal(), data=data)


@blp.route("/templates/<uuid:template_id>")
class TemplateById(MethodView):
    @requires()
    @blp.response(200, TemplateSchema)
    def get(self, template_id: uuid.UUID):
        """A visible template."""
        return templates.get_template(
            sessions(), principal=current_principal(), template_id=template_id
        )


# -- 2.6 analytics ------------------------------------------------------------------------------


@blp.route("/analytics/usage")
class Usage(MethodView):
    @requires()
    @blp.arguments(UsageAnalyticsArgsSchema, location="query")
    @blp.response(200, OrchestratorUsageSchema)
    def get(self, args: dict[str, Any]):
        """Provider calls, tokens and cost per bucket over the last ``days``, runs, and
        the busiest projects."""
        return reports.usage_analytics(
            sessions(),
            principal=current_principal(),
            days=args["days"],
            granularity=args["granularity"],
        )


@blp.route("/analytics/performance")
class Performance(MethodView):
    @requires()
    @blp.arguments(PerformanceArgsSchema, location="query")
    @blp.response(200, PerformanceSchema)
    def get(self, args: dict[str, Any]):
        """The API's response-time percentiles, error rates, throughput and resources."""
        return performance.performance_report(args["minutes"])


# -- 2.7 webhooks -------------------------------------------------------------------------------


@blp.route("/webhooks")
class Webhooks(MethodView):
    @requires("webhook:admin")
    @blp.arguments(OrchestratorListArgsSchema, location="query")
    @blp.response(200, OrchestratorWebhookListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's webhooks (admins and managers)."""
        page = webhooks.list_subscriptions(
            sessions(), principal=current_principal(), page=page_request(args)
        )
        return page.with_items([present_webhook(view) for view in page.items])

    @requires("webhook:admin")
    @blp.arguments(OrchestratorWebhookCreateSchema)
    @blp.response(201, WebhookSchema)
    def post(self, data: dict[str, Any]):
        """Subscribe a URL to events; ``secret_key`` signs the deliveries."""
        view = webhooks.create_subscription(sessions(), principal=current_principal(), data=data)
        return present_webhook(view)


@blp.route("/webhooks/<uuid:webhook_id>")
class WebhookById(MethodView):
    @requires("webhook:admin")
    @blp.arguments(OrchestratorWebhookUpdateSchema)
    @blp.response(200, WebhookSchema)
    def put(self, changes: dict[str, Any], webhook_id: uuid.UUID):
        """Change the fields given; ``is_active: false`` pauses deliveries."""
        view = webhooks.update_subscription(
            sessions(), principal=current_principal(), webhook_id=webhook_id, changes=changes
        )
        return present_webhook(view)
