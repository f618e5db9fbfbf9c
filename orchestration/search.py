"""Full-text search over one organization's own finished job outputs (the ``search``
tool). PostgreSQL: ``websearch_to_tsquery`` against the GIN-indexed
``to_tsvector('english', output)`` of each completed step, ranked with ``ts_rank``.
SQLite (the embedded mode): a plain substring match, unranked.

Every query is filtered on the organization first: another organization's rows are never
read, whatever the query says.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Job, JobStep, StepStatus

SNIPPET_CHARS = 300
# Must match the expression of ix_job_steps_output_fts (migration 0008) to use the index.
_DOCUMENT = sa.func.to_tsvector(
    sa.literal_column("'english'"), sa.func.coalesce(JobStep.output, sa.literal_column("''"))
)


@dataclass(frozen=True)
class SearchHit:
    source: str  # "job_output"
    job_id: uuid.UUID
    job_title: str
    step: str
    rank: float
    snippet: str


def search_outputs(
    session: Session,
    *,
    organization_id: uuid.UUID,
    query: str,
    limit: int = 5,
    exclude_job_id: uuid.UUID | None = None,
    timeout_ms: int | None = None,
) -> list[SearchHit]:
    query = query.strip()
    if not query:
        return []
    postgres = session.bind.dialect.name == "postgresql"
    if postgres and timeout_ms:
        # A search never holds the worker longer than the tool's own bound.
        session.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
    stmt = (
        sa.select(JobStep.job_id, Job.title, JobStep.name, JobStep.output)
        .join(Job, Job.id == JobStep.job_id)
        .where(
            Job.organization_id == organization_id,
            JobStep.status == StepStatus.COMPLETED.value,
        )
        .limit(limit)
    )
    if exclude_job_id is not None:
        stmt = stmt.where(JobStep.job_id != exclude_job_id)
    if postgres:
        tsquery = sa.func.websearch_to_tsquery(sa.literal_column("'english'"), query)
        rank = sa.func.ts_rank(_DOCUMENT, tsquery)
        stmt = (
            stmt.add_columns(rank.label("rank"))
            .where(_DOCUMENT.op("@@")(tsquery))
            .order_by(sa.desc("rank"), JobStep.completed_at.desc())
        )
    else:
        stmt = (
            stmt.add_columns(sa.literal(0.0).label("rank"))
            .where(JobStep.output.ilike(f"%{query}%"))
            .order_by(JobStep.completed_at.desc())
        )
    return [
        SearchHit(
            source="job_output",
            job_id=row.job_id,
            job_title=row.title,
            step=row.name,
            rank=round(float(row.rank), 6),
            snippet=" ".join((row.output or "").split())[:SNIPPET_CHARS],
        )
        for row in session.execute(stmt)
    ]
