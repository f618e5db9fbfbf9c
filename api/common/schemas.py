"""Schemas shared by every resource: list arguments, the list envelope, money."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from orchestration.listing import DEFAULT_LIMIT, MAX_LIMIT, PageRequest
from orchestration.money import money_text


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


class Money(fields.Field):
    """Exact money out as a string (``"25.00"``, ``"0.000042"``); null stays null."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return money_text(value)


def max_places(places: int) -> Any:
    """A Decimal validator: more digits than we store is refused, never silently rounded."""

    def check(value: Decimal) -> None:
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            raise ValidationError(f"at most {places} decimal places")

    return check


class ErrorBodySchema(Schema):
    code = fields.String(
        required=True,
        metadata={"description": "VALIDATION_ERROR, AUTHENTICATION_REQUIRED, FORBIDDEN, ..."},
    )
    message = fields.String(required=True)
    details = fields.Raw(
        required=True,
        metadata={"description": "For invalid input, a list of {field, message}."},
    )
    request_id = fields.String(required=True)
    timestamp = fields.DateTime(required=True)


class ErrorEnvelopeSchema(Schema):
    """Every 4xx and 5xx answer: ``{"error": {code, message, details, request_id}}``."""

    error = fields.Nested(ErrorBodySchema, required=True)
