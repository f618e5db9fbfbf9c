"""Schemas shared by every resource: list arguments and the list envelope."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from orchestration.listing import DEFAULT_LIMIT, MAX_LIMIT, PageRequest


class ListArgsSchema(Schema):
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))
    page = fields.Integer(validate=validate.Range(min=1))
    sort = fields.String(validate=validate.Length(max=200))

    @validates_schema
    def _one_of_page_or_offset(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("page") and data.get("offset"):
            raise ValidationError("use either page or offset, not both", "page")


def page_request(args: dict[str, Any]) -> PageRequest:
    limit = args.get("limit", DEFAULT_LIMIT)
    offset = (args["page"] - 1) * limit if args.get("page") else args.get("offset", 0)
    return PageRequest(limit=limit, offset=offset, sort=args.get("sort"))


def list_envelope(page: Any) -> dict[str, Any]:
    """Rows as they are: the view's response schema dumps them (once)."""
    return {
        "items": page.items,
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }
