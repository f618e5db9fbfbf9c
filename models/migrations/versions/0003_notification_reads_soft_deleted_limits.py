"""notification read receipts (per user) instead of one shared is_read flag; budget limits
are deleted softly

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:16:09.677182
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_reads",
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_reads_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_reads_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notification_id", "user_id", name=op.f("pk_notification_reads")),
    )
    op.create_index(
        op.f("ix_notification_reads_user_id"), "notification_reads", ["user_id"], unique=False
    )
    # No endpoint ever set the shared flag, so there is no read state to carry over.
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("is_read")
    op.add_column(
        "budget_limits", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("budget_limits") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(
            sa.Column("is_read", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.drop_index(op.f("ix_notification_reads_user_id"), table_name="notification_reads")
    op.drop_table("notification_reads")
