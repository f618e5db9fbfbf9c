"""Pagination and sorting shared by every list query."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from orchestration.errors import field_error

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Bounds that keep offset arithmetic inside PostgreSQL's bigint and any real list.
MAX_OFFSET = 10_000_000


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str | None = None
    # Every list's rows have created_at: the window applies to all of them alike.
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
    sort: str | None = None

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.items) < self.total

    @property
    def has_prev(self) -> bool:
        return self.offset > 0

    def with_items(self, items: list[Any]) -> Page[Any]:
        """The same page over presented rows (views built from the ORM rows)."""
        return replace(self, items=items)  # type: ignore[return-value]


def apply_sort(
    stmt: sa.Select[Any], sort: str | None, columns: dict[str, Any], default: Any
) -> sa.Select[Any]:
    """``sort=priority,-created_at``; unknown fields are a 422, not ignored."""
    if not sort:
        return stmt.order_by(default)
    clauses = []
    for raw in sort.split(","):
        name = raw.strip()
        descending = name.startswith("-")
        name = name.lstrip("+-")
        if name not in columns:
            raise field_error(
                "sort", f"cannot sort by '{name}'; allowed: {', '.join(sorted(columns))}"
            )
        clauses.append(columns[name].desc() if descending else columns[name].asc())
    return stmt.order_by(*clauses)


def paginate(session: Session, stmt: sa.Select[Any], page: PageRequest) -> Page[Any]:
    """One page of ``stmt`` (already filtered and sorted), within the created_at window."""
    created_at = stmt.column_descriptions[0]["entity"].created_at
    if page.created_after is not None:
        stmt = stmt.where(created_at >= page.created_after)
    if page.created_before is not None:
        stmt = stmt.where(created_at < page.created_before)
    total = session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery()))
    items = list(session.scalars(stmt.limit(page.limit).offset(page.offset)))
    return Page(items=items, total=total or 0, limit=page.limit, offset=page.offset, sort=page.sort)
