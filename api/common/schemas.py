"""Schemas shared by every resource: list arguments, the list envelope, money, errors.

Every list pages the same way, through ``ListArgsSchema`` -> ``page_request`` ->
``orchestration.listing.paginate`` -> ``ListEnvelopeSchema``: ``offset``, ``page`` or an
opaque ``cursor`` (seed 003: ``next_cursor``/``prev_cursor``, ``has_next``/``has_prev``).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC
from decimal import Decimal
from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    pre_dump,
    validate,
    validates_schema,
)

from orchestration.errors import field_error
from orchestration.listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Page, PageRequest
from orchestration.money import money_text

# Years a date or time may name: room on both sides for any UTC offset and for a day,
# week or month of arithmetic, so nothing computed from it leaves the calendar (a 500).
MIN_YEAR, MAX_YEAR = 2, 9998


def _in_calendar(year: int) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValidationError(f"must be between years {MIN_YEAR} and {MAX_YEAR}")


class UtcDateTime(fields.AwareDateTime):
    """A point in time, answered in UTC; without an offset it is UTC (unless
    ``default_timezone=None``: then an offset is required)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("default_timezone", UTC)
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        moment = super()._deserialize(value, attr, data, **kwargs)
        _in_calendar(moment.year)
        return moment.astimezone(UTC)


class CalendarDate(fields.Date):
    """A date within the years every report can compute with."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        day = super()._deserialize(value, attr, data, **kwargs)
        _in_calendar(day.year)
        return day


class ListArgsSchema(Schema):
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))
    page = fields.Integer(validate=validate.Range(min=1, max=MAX_OFFSET // MAX_LIMIT))
    cursor = fields.String(
        validate=validate.Length(min=1, max=500),
        metadata={"description": "next_cursor or prev_cursor of a previous page."},
    )
    sort = fields.String(validate=validate.Length(max=200))
    created_after = UtcDateTime(metadata={"description": "created at or after (inclusive)"})
    created_before = UtcDateTime(metadata={"description": "created before (exclusive)"})

    @validates_schema
    def _one_way_to_page(self, data: dict[str, Any], **_: Any) -> None:
        given = [name for name in ("page", "offset", "cursor") if data.get(name)]
        if len(given) > 1:
            raise ValidationError(f"use one of page, offset or cursor, not {given}", given[1])


def encode_cursor(offset: int, sort: str | None) -> str:
    raw = json.dumps({"offset": offset, "sort": sort}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str | None) -> int:
    """The offset a cursor stands for; it must come from a list in the same order."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        offset = position["offset"]
        valid = isinstance(offset, int) and 0 <= offset <= MAX_OFFSET
    except (ValueError, TypeError, KeyError, binascii.Error):
        valid = False
    if not valid:
        raise ValidationError("is not a cursor this API issued", "cursor")
    if position.get("sort") != sort:
        raise ValidationError("was issued for another sort order", "cursor")
    return offset


def page_request(args: dict[str, Any]) -> PageRequest:
    limit = args.get("limit", DEFAULT_LIMIT)
    if args.get("cursor"):
        try:
            offset = decode_cursor(args["cursor"], args.get("sort"))
        except ValidationError as exc:
            raise field_error("cursor", str(exc.messages[0])) from None
    elif args.get("page"):
        offset = (args["page"] - 1) * limit
    else:
        offset = args.get("offset", 0)
    return PageRequest(
        limit=limit,
        offset=offset,
        sort=args.get("sort"),
        created_after=args.get("created_after"),
        created_before=args.get("created_before"),
    )


def list_envelope(page: Page[Any]) -> Page[Any]:
    """Rows as they are: the view's response schema (a ListEnvelopeSchema) dumps them."""
    return page


class ListEnvelopeSchema(Schema):
    """``{"items", "total", "limit", "offset", "has_next", "has_prev", "next_cursor",
    "prev_cursor"}``; each list adds its own ``items``."""

    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    has_next = fields.Boolean(required=True)
    has_prev = fields.Boolean(required=True)
    next_cursor = fields.String(required=True, allow_none=True)
    prev_cursor = fields.String(required=True, allow_none=True)

    @pre_dump
    def _paging(self, page: Page[Any], **_: Any) -> dict[str, Any]:
        previous = max(page.offset - page.limit, 0)
        return {
            "items": page.items,
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
            "has_next": page.has_next,
            "has_prev": page.has_prev,
            "next_cursor": (
                encode_cursor(page.offset + page.limit, page.sort) if page.has_next else None
            ),
            "prev_cursor": encode_cursor(previous, page.sort) if page.has_prev else None,
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
