"""Pagination and sorting shared by every list query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from orchestration.errors import field_error

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str | None = None


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


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
    total = session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery()))
    items = list(session.scalars(stmt.limit(page.limit).offset(page.offset)))
    return Page(items=items, total=total or 0, limit=page.limit, offset=page.offset)
