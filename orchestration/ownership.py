"""The tenant-scoped lookup every command shares (session in, never commit)."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from orchestration.errors import NotFound

T = TypeVar("T")


def get_owned(
    session: Session,
    model: type[T],
    row_id: uuid.UUID | None,
    *,
    organization_id: uuid.UUID,
    what: str | None = None,
    field: str | None = None,
    lock: bool = False,
) -> T:
    """The organization's row of ``model`` with ``row_id``. Another organization's row is
    indistinguishable from a missing one: both are a 404 ("<what> <id> not found", with
    ``field`` in the details when the id came from a request field). ``lock``: SELECT ...
    FOR UPDATE."""
    row: Any = (
        session.get(model, row_id, with_for_update=True if lock else None)
        if row_id is not None
        else None
    )
    if row is None or row.organization_id != organization_id:
        name = what or model.__name__.lower()
        details = [{"field": field, "message": "not found"}] if field else None
        raise NotFound(f"{name} {row_id} not found", details)
    return row
