"""Emergency pause-all / resume-all (seed 001): stop an organization's spending at once."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Conversation, ConversationStatus, Job, JobStatus, Organization, utcnow
from models.db import transaction
from orchestration import canvas, live, webhooks
from orchestration.principal import Principal
from orchestration.recovery import unfinished_plan
from orchestration.state import append_event


@dataclass(frozen=True)
class PauseSummary:
    """What pause-all stopped (seed 001 answers ``paused_agents``/``active_conversations``)."""

    jobs: int
    agents: int
    active_conversations: int


def pause_all(sessions: sessionmaker[Session], *, principal: Principal) -> int:
    """Pause every queued and running job; workers make no provider call while the flag is set.

    A step already inside its provider call finishes and records its cost; the next step
    of that job does not start.
    """
    return pause_everything(sessions, principal=principal).jobs


def pause_everything(sessions: sessionmaker[Session], *, principal: Principal) -> PauseSummary:
    """``pause_all``, answering also how many agents were at work and how many of the
    organization's conversations are open (their replies wait until resume-all)."""
    with transaction(sessions) as session:
        session.execute(
            sa.update(Organization)
            .where(Organization.id == principal.organization_id)
            .values(emergency_paused_at=utcnow())
        )
        paused_rows = list(
            session.execute(
                sa.update(Job)
                .where(
                    Job.organization_id == principal.organization_id,
                    Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                )
                .values(
                    status=JobStatus.PAUSED.value, paused_reason="emergency", updated_at=utcnow()
                )
                .returning(Job.id, Job.agent_id)
            )
        )
        paused = [row[0] for row in paused_rows]
        agents = {row[1] for row in paused_rows if row[1] is not None}
        open_conversations = session.scalar(
            sa.select(sa.func.count())
            .select_from(Conversation)
            .where(
                Conversation.organization_id == principal.organization_id,
                Conversation.status != ConversationStatus.COMPLETED.value,
            )
        )
        for job_id in paused:
            append_event(
                session,
                job_id=job_id,
                type="job.paused",
                data={"status": "paused", "reason": "emergency"},
            )
        webhooks.record_event(
            session, organization_id=principal.organization_id, event_type="emergency.pause",
            data={"triggered_by": str(principal.user_id), "paused_jobs": len(paused)},
        )  # fmt: skip
        live.emit_after_commit(
            session,
            "emergency_pause",
            {
                "triggered_by": "user",
                "user_id": str(principal.user_id),
                "reason": "Emergency pause by an administrator",
                "paused_jobs": len(paused),
                "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
            },
            organization_id=principal.organization_id,
        )
    return PauseSummary(
        jobs=len(paused), agents=len(agents), active_conversations=int(open_conversations or 0)
    )


def resume_all(sessions: sessionmaker[Session], *, principal: Principal) -> int:
    """Clear the flag and send every emergency-paused job again from where it stopped."""
    resumed: list[tuple[Job, list, list]] = []
    with transaction(sessions) as session:
        session.execute(
            sa.update(Organization)
            .where(Organization.id == principal.organization_id)
            .values(emergency_paused_at=None)
        )
        jobs = list(
            session.scalars(
                sa.update(Job)
                .where(
                    Job.organization_id == principal.organization_id,
                    Job.status == JobStatus.PAUSED.value,
                    Job.paused_reason == "emergency",
                )
                .values(status=JobStatus.QUEUED.value, paused_reason=None, updated_at=utcnow())
                .returning(Job)
            )
        )
        for job in jobs:
            append_event(
                session,
                job_id=job.id,
                type="job.queued",
                data={"status": "queued", "reason": "emergency resume"},
            )
            phases, steps = unfinished_plan(session, job.id)
            resumed.append((job, phases, steps))
        webhooks.record_event(
            session, organization_id=principal.organization_id, event_type="emergency.resume",
            data={"triggered_by": str(principal.user_id), "resumed_jobs": len(resumed)},
        )  # fmt: skip
    for job, phases, steps in resumed:
        canvas.enqueue(job, phases, steps)
    return len(resumed)
