"""budget reservations: deferred settlements (issue 14)

A settlement that cannot cross an alert level or the limit marks its hold ``deferred``
with the actual cost (``settled_amount``) instead of updating the hot window row; the
next reservation on the window applies it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "budget_reservations",
        sa.Column("settled_amount", sa.Numeric(precision=20, scale=10), nullable=True),
    )
    op.create_index(
        "ix_budget_reservations_deferred",
        "budget_reservations",
        ["window_id"],
        unique=False,
        postgresql_where=sa.text("status = 'deferred'"),
        sqlite_where=sa.text("status = 'deferred'"),
    )


def downgrade() -> None:
    # Apply what is deferred first: the window columns alone must be the totals again.
    op.execute(
        "UPDATE budget_windows SET "
        "spent = spent + (SELECT COALESCE(SUM(h.settled_amount), 0) FROM budget_reservations h"
        " WHERE h.window_id = budget_windows.id AND h.status = 'deferred'), "
        "reserved = reserved - (SELECT COALESCE(SUM(h.amount), 0) FROM budget_reservations h"
        " WHERE h.window_id = budget_windows.id AND h.status = 'deferred')"
    )
    op.execute("UPDATE budget_reservations SET status = 'settled' WHERE status = 'deferred'")
    op.drop_index("ix_budget_reservations_deferred", table_name="budget_reservations")
    with op.batch_alter_table("budget_reservations") as batch:
        batch.drop_column("settled_amount")
