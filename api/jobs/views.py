"""Helpers every job-kind blueprint shares: submission (202 + Location) and list args."""

from __future__ import annotations

from typing import Any

from flask import url_for

from api.common.schemas import page_request
from api.jobs.schemas import present_accepted
from api.security import current_principal, sessions
from models import JobKind
from orchestration import jobs


def submission_from(
    data: dict[str, Any], *, kind: JobKind, title: str, job_input: dict[str, Any], **extra: Any
) -> jobs.JobSubmission:
    """The fields every kind's body shares (JobSubmitBaseSchema), plus the kind's own."""
    return jobs.JobSubmission(
        kind=kind,
        title=title,
        input=job_input,
        settings=data["settings"],
        priority=data["priority"],
        project_id=data.get("project_id"),
        agent_id=data.get("agent_id"),
        **extra,
    )


def submit(
    submission: jobs.JobSubmission, endpoint: str, message: str, id_alias: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    detail = jobs.submit_job(
        sessions(), principal=current_principal(), submission=submission, with_creator=False
    )  # present_accepted names no user
    location = url_for(endpoint, job_id=detail.job.id)
    body = present_accepted(detail, location, message)
    if id_alias:
        body[id_alias] = detail.job.id
    return body, 202, {"Location": location}


def list_for(kind: JobKind | None, args: dict[str, Any]) -> Any:
    filters = jobs.JobFilters(
        kind=kind or (JobKind(args["kind"]) if args.get("kind") else None),
        status=args.get("status"),
        priority=args.get("priority"),
        project_id=args.get("project_id"),
        agent_id=args.get("agent_id"),
    )
    return jobs.list_jobs(
        sessions(), principal=current_principal(), filters=filters, page=page_request(args)
    )
