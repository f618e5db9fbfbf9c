"""budget reservations: one index on (call_key, status) for a call's holds (issue 14)

A settlement finds its call's open holds by ``call_key = :key AND status = 'held'``.
With an index on ``call_key`` alone, PostgreSQL's plan ANDed its bitmap with that of
``ix_budget_reservations_open`` (status, expires_at), whose 'held' entries include every
hold settled since the table's last VACUUM (a bitmap scan never marks an entry dead):
each settlement read thousands of index entries more, and more every minute. With the
status in the key's index, the lookup reads the call's own entries only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 23:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_budget_reservations_call_key_status",
        "budget_reservations",
        ["call_key", "status"],
        unique=False,
    )
    op.drop_index("ix_budget_reservations_call_key", table_name="budget_reservations")


def downgrade() -> None:
    op.create_index(
        "ix_budget_reservations_call_key", "budget_reservations", ["call_key"], unique=False
    )
    op.drop_index("ix_budget_reservations_call_key_status", table_name="budget_reservations")
