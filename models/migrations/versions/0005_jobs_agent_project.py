"""jobs: an active job that names only its agent belongs to the agent's project

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Active jobs only: their next calls are charged to the project's limits. Finished
    # jobs' ledger rows stay as they were counted in the project's windows.
    op.execute(
        """
        UPDATE jobs SET project_id = (
            SELECT agents.project_id FROM agents WHERE agents.id = jobs.agent_id
        )
        WHERE project_id IS NULL AND agent_id IS NOT NULL
          AND status IN ('pending', 'queued', 'running', 'paused')
        """
    )


def downgrade() -> None:
    pass  # the backfilled owners are right; nothing to undo
