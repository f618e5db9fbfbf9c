"""agents: description, metadata (seed 002); steps: tools used and external task state;
integrations: kind (provider | task_server); full-text index over step outputs

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-02 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("agents", sa.Column("description", sa.Text(), nullable=True))
    op.add_column(
        "agents", sa.Column("metadata", JSON, nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column(
        "job_steps",
        sa.Column("tools_used", JSON, nullable=False, server_default=sa.text("'[]'")),
    )
    op.add_column("job_steps", sa.Column("external", JSON, nullable=True))
    op.add_column(
        "integrations",
        sa.Column("kind", sa.String(length=20), nullable=False, server_default="provider"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The search tool's full-text index over finished step outputs.
        op.execute(
            "CREATE INDEX ix_job_steps_output_fts ON job_steps "
            "USING gin (to_tsvector('english', coalesce(output, '')))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_job_steps_output_fts")
    op.drop_column("integrations", "kind")
    op.drop_column("job_steps", "external")
    op.drop_column("job_steps", "tools_used")
    op.drop_column("agents", "metadata")
    op.drop_column("agents", "description")
