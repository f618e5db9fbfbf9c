"""Agent test (seed 000) and execute (seed 002): an ``agent_run`` job the caller waits on.

The run goes through the same engine as every job (queue, worker, provider, ledger); the
API just waits for it a bounded time and otherwise answers with the run to poll.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import TERMINAL_STATUSES, Agent, Job, JobKind
from models.db import transaction
from orchestration import jobs
from orchestration.ownership import get_owned
from orchestration.principal import Principal

POLL_SECONDS = 0.05


def _agent(session: Session, principal: Principal, agent_id: uuid.UUID) -> Agent:
    return get_owned(session, Agent, agent_id, organization_id=principal.organization_id)


def run_agent(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    agent_id: uuid.UUID,
    input_text: str,
    task_type: str | None,
    metadata: dict[str, Any],
    wait_seconds: float,
    purpose: str,
) -> jobs.JobDetail:
    """Submit the run, then wait up to ``wait_seconds`` for it to finish."""
    with transaction(sessions) as session:
        agent = _agent(session, principal, agent_id)
        title = f"{purpose} of agent {agent.name}"
    submitted = jobs.submit_job(
        sessions,
        principal=principal,
        submission=jobs.JobSubmission(
            kind=JobKind.AGENT_RUN,
            title=title,
            input={
                "input": input_text,
                "task_type": task_type,
                "metadata": metadata,
                "purpose": purpose,
            },
            agent_id=agent_id,
            priority="high",
        ),
    )
    job_id = submitted.job.id
    # Never longer than the server's worker timeout allows (BATON_API_TIMEOUT).
    deadline = time.monotonic() + min(wait_seconds, get_settings().max_wait_seconds)
    while time.monotonic() < deadline:
        with transaction(sessions) as session:
            status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
        if status in TERMINAL_STATUSES:
            break
        time.sleep(POLL_SECONDS)
    return jobs.get_job(sessions, principal=principal, job_id=job_id)
