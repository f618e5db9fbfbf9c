"""Seed 004's endpoints: each view maps the document's request, calls the one
orchestration function the canonical view calls, and shapes the document's answer."""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask.views import MethodView

from api.analyses.routes import analysis_submissions
from api.analyses.schemas import AnalysisCreateSchema
from api.auth.routes import login_attempts
from api.auth.schemas import LoginSchema
from api.builds.routes import build_submissions
from api.builds.schemas import BuildCreateSchema
from api.common.openapi import answers, job_submission
from api.compat import core
from api.compat.phase2 import DIALECT, PERMISSION_WORDS, ROLE_WORDS, may_view
from api.compat.phase2.schemas import (
    Phase2AnalysisSchema,
    Phase2BuildAcceptedSchema,
    Phase2BuildHistorySchema,
    Phase2BuildSchema,
    Phase2HealthSchema,
    Phase2MessageSchema,
    Phase2ProbeSchema,
    Phase2SystemStatusSchema,
    Phase2TokenSchema,
    present_analysis,
    present_build,
)
from api.jobs.views import submission_from
from api.security import current_principal, requires, sessions
from models import JobKind, User, utcnow
from orchestration import health, jobs
from orchestration.errors import Forbidden
from orchestration.principal import PERMISSIONS

blp = DIALECT.blueprint


def _claims(user: User) -> dict[str, Any]:
    allowed = PERMISSIONS.get(user.role, ())
    words = [w for perm, ws in PERMISSION_WORDS.items() if perm in allowed for w in ws]
    return {"role": ROLE_WORDS.get(user.role, "user"), "permissions": words}


# The document's claims: ``sub`` is the username, role and build:*/analysis:* permissions.
issue = core.token_issuer(subject=lambda user: user.username or str(user.id), claims=_claims)


@blp.route("/auth/login")
class Login(MethodView):
    @login_attempts
    @blp.arguments(LoginSchema)
    @blp.response(200, Phase2TokenSchema)
    @answers(401, "Wrong username or password.")
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Username (or email) and password -> a bearer JWT."""
        signin = core.password_sign_in(data, issue=issue)
        return {
            "access_token": signin.tokens.access_token,
            "token_type": "bearer",
            "expires_in": signin.tokens.expires_in,
        }


def _own(detail: jobs.JobDetail, what: str) -> jobs.JobDetail:
    """Users see their own builds; admins (and managers) any in the organization."""
    if not may_view(current_principal(), detail.job.created_by_id):
        raise Forbidden(f"Not authorized to view this {what}")
    return detail


def _history_filters(kind: JobKind) -> jobs.JobFilters:
    principal = current_principal()
    mine = None if principal.can("job:cancel_any") else principal.user_id
    return jobs.JobFilters(kind=kind, created_by_id=mine)


def _list_row(job: Any) -> dict[str, Any]:
    detail = jobs.JobDetail(job=job, phases=[], steps=[], events=[])
    row = present_build(detail)
    row["created_by"] = getattr(job, "created_by_name", None)
    return row


@blp.route("/api/build/")
class Builds(MethodView):
    @build_submissions
    @requires("job:create")
    @blp.arguments(BuildCreateSchema)
    @blp.response(202, Phase2BuildAcceptedSchema)
    @job_submission
    def post(self, data: dict[str, Any]):
        """Create a build task (202, status ``initializing``)."""
        submission = submission_from(
            data,
            kind=JobKind.BUILD,
            title=f"{data['project_name']}: {data['goal'][:160]}",
            job_input={
                "project_name": data["project_name"],
                "goal": data["goal"],
                "parameters": data["parameters"],
            },
        )
        detail = jobs.submit_job(sessions(), principal=current_principal(), submission=submission)
        body = {
            "task_id": detail.job.id,
            "status": "initializing",
            "message": "Build task created successfully",
        }
        return body, 202, {"Location": DIALECT.url_for("BuildById", task_id=detail.job.id)}

    @requires("job:read")
    @blp.arguments(core.LimitOffsetArgsSchema, location="query")
    @blp.response(200, Phase2BuildHistorySchema)
    def get(self, args: dict[str, Any]):
        """The caller's builds, newest first (admins: the organization's)."""
        page = jobs.list_jobs(
            sessions(),
            principal=current_principal(),
            filters=_history_filters(JobKind.BUILD),
            page=core.page_request(args),
            with_creators=True,
        )
        return core.mapped(page, _list_row)


@blp.route("/api/build/<uuid:task_id>")
class BuildById(MethodView):
    @requires("job:read")
    @blp.response(200, Phase2BuildSchema)
    @answers(403, "Not authorized to view this build.")
    def get(self, task_id: uuid.UUID):
        """Status, progress, results and error of a build."""
        detail = jobs.get_job(
            sessions(), principal=current_principal(), job_id=task_id, kind=JobKind.BUILD
        )
        return present_build(_own(detail, "build"))

    @requires("job:cancel")
    @blp.response(200, Phase2MessageSchema)
    @answers(403, "Not authorized.")
    @answers(409, "Build cannot be cancelled (already completed/failed/cancelled).")
    def delete(self, task_id: uuid.UUID):
        """Cancel an initializing or running build; a finished one answers 409."""
        jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=task_id, kind=JobKind.BUILD
        )
        return {"message": "Build task cancelled successfully"}


@blp.route("/api/analysis/")
class Analyses(MethodView):
    @analysis_submissions
    @requires("job:create")
    @blp.arguments(AnalysisCreateSchema)
    @blp.response(202, Phase2AnalysisSchema)
    @job_submission
    def post(self, data: dict[str, Any]):
        """Start an analysis; its scores fill in when it completes (GET it)."""
        submission = submission_from(
            data,
            kind=JobKind.ANALYSIS,
            title=f"{data['project_name']}: {', '.join(data['analysis_types'])}",
            job_input={
                "project_name": data["project_name"],
                "analysis_types": data["analysis_types"],
                "code": data.get("code"),
                "parameters": data["parameters"],
            },
        )
        detail = jobs.submit_job(sessions(), principal=current_principal(), submission=submission)
        location = DIALECT.url_for("AnalysisById", analysis_id=detail.job.id)
        return present_analysis(detail), 202, {"Location": location}


@blp.route("/api/analysis/<uuid:analysis_id>")
class AnalysisById(MethodView):
    @requires("job:read")
    @blp.response(200, Phase2AnalysisSchema)
    @answers(403, "Not authorized to view.")
    def get(self, analysis_id: uuid.UUID):
        """An analysis and, once completed, its results."""
        detail = jobs.get_job(
            sessions(), principal=current_principal(), job_id=analysis_id, kind=JobKind.ANALYSIS
        )
        return present_analysis(_own(detail, "analysis"))


# -- health ---------------------------------------------------------------------------------


def _state(value: str) -> str:
    return {"connected": "healthy", "unavailable": "unhealthy"}.get(value, value)


@blp.route("/api/health/")
class Health(MethodView):
    @blp.response(200, Phase2HealthSchema)
    @blp.doc(security=[])
    def get(self):
        """Basic health for load balancers."""
        report = health.health_report(sessions(), include_workers_and_providers=False)
        return {"status": report.status, "timestamp": report.timestamp, "version": report.version}


@blp.route("/api/health/ready")
class Ready(MethodView):
    @blp.response(200, Phase2ProbeSchema)
    @blp.alt_response(503, schema=Phase2ProbeSchema, description="Service not ready")
    @blp.doc(security=[])
    def get(self):
        """200 when the service can take requests (its database answers), else 503."""
        ready = health.is_ready(sessions())
        return {"status": "ready" if ready else "not_ready", "timestamp": utcnow()}, (
            200 if ready else 503
        )


@blp.route("/api/health/live")
class Live(MethodView):
    @blp.response(200, Phase2ProbeSchema)
    @blp.doc(security=[])
    def get(self):
        """The process is up."""
        return {"status": "alive", "timestamp": utcnow()}


@blp.route("/api/health/status")
class Status(MethodView):
    @blp.response(200, Phase2SystemStatusSchema)
    @blp.doc(security=[])
    def get(self):
        """Components and process metrics."""
        report = health.health_report(sessions(), include_workers_and_providers=False)
        metrics = health.process_metrics()
        uptime = max(float(metrics["uptime_seconds"]), 1.0)
        try:
            total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
        except (ValueError, OSError):
            total_mb = 0.0
        return {
            "status": "operational" if report.healthy else "degraded",
            "timestamp": report.timestamp,
            "version": report.version,
            "components": {
                "api": "healthy",
                "database": _state(report.database),
                "cache": _state(report.redis),
                "security": "healthy",
            },
            "metrics": {
                "uptime_seconds": metrics["uptime_seconds"],
                "requests_total": metrics["requests_total"],
                "requests_per_second": metrics["requests_per_second"],
                "memory_percent": round(100 * metrics["max_rss_mb"] / total_mb, 1)
                if total_mb
                else 0.0,
                "cpu_percent": round(100 * metrics["cpu_seconds"] / uptime, 1),
            },
        }
