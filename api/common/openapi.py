"""The OpenAPI document tells the truth: every answer an operation can give, and how.

Views carry small marks (``x-baton-*`` keys in flask-smorest's manual doc, set by
``requires`` and the decorators below); ``finalize`` turns them, and what the edge does
for every request (``api.common.edge``), into documented responses, security, headers
and operation ids, once, when the document is built.
"""

from __future__ import annotations

import re
from copy import deepcopy
from typing import Any

from marshmallow import fields

from api.common.schemas import Money

AUTH_MARK = "x-baton-auth"  # the permission a view checks ("" = any signed-in user)
RESPONSES_MARK = "x-baton-responses"  # {"409": "why"}: answers particular to a view
IDEMPOTENT_MARK = "x-baton-idempotent"

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"

# Standard answers in the error envelope, defined once as response components.
STANDARD_RESPONSES: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", "The body is not well-formed JSON."),
    "401": ("Unauthorized", "No valid bearer token (missing, expired, revoked)."),
    "402": ("PaymentRequired", "A blocking budget limit is already spent (BUDGET_EXCEEDED)."),
    "403": ("Forbidden", "The caller's role lacks the permission this operation needs."),
    "404": ("NotFound", "No such resource in the caller's organization."),
    "409": ("Conflict", "The resource's state does not allow this."),
    "413": ("PayloadTooLarge", "The body is larger than the configured limit."),
    "414": ("UriTooLong", "The request URL is too long."),
    "415": ("UnsupportedMediaType", "A body was sent without Content-Type: application/json."),
    "422": (
        "ValidationFailed",
        "Invalid input: a field, query or header parameter, or a NUL character anywhere.",
    ),
    "429": ("TooManyRequests", "A rate limit is exhausted; retry after Retry-After seconds."),
}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The client's X-Request-ID when it was sane, else a generated one.",
        "schema": {"type": "string"},
    },
}
STATUS_HEADERS: dict[str, dict[str, dict[str, Any]]] = {
    "401": {
        "WWW-Authenticate": {
            "description": "Always `Bearer`.",
            "schema": {"type": "string"},
        }
    },
    "429": {
        "Retry-After": {
            "description": "Seconds until the limit's window resets.",
            "schema": {"type": "integer"},
        }
    },
}
IDEMPOTENCY_PARAMETER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "Makes a retried submission return the first job instead of a second one.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _mark(function: Any, key: str, value: Any) -> None:
    """Add to flask-smorest's manual doc, which it merges into the operation."""
    apidoc = deepcopy(getattr(function, "_apidoc", {}))
    manual = apidoc.setdefault("manual_doc", {})
    if isinstance(value, dict):
        manual[key] = {**manual.get(key, {}), **value}
    else:
        manual[key] = value
    function._apidoc = apidoc


def mark_authenticated(function: Any, permission: str | None) -> None:
    _mark(function, AUTH_MARK, permission or "")


def answers(status: int, why: str) -> Any:
    """Document an answer particular to a view (e.g. 409 on cancelling a finished job)."""

    def decorator(function: Any) -> Any:
        _mark(function, RESPONSES_MARK, {str(status): why})
        return function

    return decorator


def job_submission(function: Any) -> Any:
    """A submission: takes Idempotency-Key; a spent budget limit refuses it (402)."""
    _mark(function, IDEMPOTENT_MARK, True)
    _mark(function, RESPONSES_MARK, {"402": STANDARD_RESPONSES["402"][1]})
    return function


def register_fields(api: Any) -> None:
    """Money and decimals are strings in JSON (exact), documented as such."""
    api.ma_plugin.converter.add_attribute_function(_decimal_as_string)


def _decimal_as_string(self: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    if isinstance(field, Money | fields.Decimal):
        return {"type": "string", "format": "decimal", "pattern": DECIMAL_PATTERN}
    return {}


# -- the finishing pass ------------------------------------------------------------------


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path.removeprefix("/api/v1")).replace("-", "_").split("/")
    return "_".join([method, *[w for w in words if w]])


def _error_response(status: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    description = STANDARD_RESPONSES.get(status, ("", "An error."))[1]
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema or ERROR_REF}},
    }
    response["headers"] = {**HEADERS, **STATUS_HEADERS.get(status, {})}
    return response


def _decimal_bounds(node: Any) -> None:
    """Decimal bounds are strings; in JSON Schema they must be numbers: describe them."""
    if isinstance(node, dict):
        if node.get("format") == "decimal":
            bounds = [
                f"{word} {node.pop(key)}"
                for key, word in (("minimum", "at least"), ("maximum", "at most"))
                if key in node
            ]
            if bounds:
                text = "A decimal string, " + " and ".join(bounds) + "."
                node["description"] = (
                    f"{node['description']} {text}".strip() if ("description" in node) else text
                )
        for value in node.values():
            _decimal_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _decimal_bounds(value)


def _pascal(name: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^A-Za-z0-9]+", name))


def inline_model_names(schemas: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Names client generators give inline object properties: parent + property
    (openapi-python-client's rule; a title replaces the property's part)."""
    names: dict[str, tuple[str, str]] = {}
    for parent, schema in schemas.items():
        for prop, prop_schema in (schema.get("properties") or {}).items():
            if "$ref" not in prop_schema and prop_schema.get("type") == "object":
                names[parent + _pascal(prop_schema.get("title") or prop)] = (parent, prop)
    return names


def _untangle_inline_names(schemas: dict[str, Any]) -> None:
    """An inline object named like a component makes generators drop the parent model
    (Agent.config vs AgentConfig): give such a property a title of its own."""
    for name, (parent, prop) in inline_model_names(schemas).items():
        if name in schemas:
            schemas[parent]["properties"][prop]["title"] = f"{_pascal(prop)}Values"


def _dialect_of(operation: dict[str, Any], dialects: dict[str, Any]) -> Any:
    for tag in operation.get("tags", []):
        if tag in dialects:
            return dialects[tag]
    return None


def _document_dialect_errors(
    operation: dict[str, Any], dialect: Any, statuses: set[str], particular: dict[str, str]
) -> None:
    """A seed dialect's operation: its document's statuses, each in its error shape."""
    authenticated = operation["security"] != []
    documented = operation.setdefault("responses", {})
    wanted = dialect.documented_statuses(statuses | set(particular), authenticated=authenticated)
    # flask-smorest's own error answers ($refs to its components): in the dialect's shape.
    for status in [s for s, r in documented.items() if "$ref" in r and s not in wanted]:
        documented[status] = _error_response(status, dialect.error_ref)
        documented[status]["description"] = "An error."
    for status in sorted(wanted):
        if status in documented and "$ref" not in documented[status]:
            continue  # an answer the view declared itself (a 503 probe, a 202)
        response = _error_response(status, dialect.error_ref)
        why = particular.get(status)
        if why:
            response["description"] = why
        response["headers"] = {**HEADERS, **STATUS_HEADERS.get(status, {})}
        documented[status] = response
    for response in documented.values():
        if "$ref" not in response:
            response.setdefault("headers", {}).update(HEADERS)


def finalize(
    document: dict[str, Any],
    *,
    public_permissions: set[str],
    unlimited_tags: set[str],
    dialects: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Complete the generated document. ``public_permissions``: held by every role, so a
    view checking only one of them never answers 403; ``unlimited_tags``: blueprints
    exempt from rate limits (no 429); ``dialects``: seed dialects by OpenAPI tag, whose
    operations answer errors in their own shapes and statuses."""
    dialects = dialects or {}
    components = document.setdefault("components", {})
    responses = components.setdefault("responses", {})
    for status, (name, _) in STANDARD_RESPONSES.items():
        responses[name] = _error_response(status)
    _decimal_bounds(components.get("schemas", {}))
    _untangle_inline_names(components.get("schemas", {}))

    seen_ids: set[str] = set()
    for path, item in document.get("paths", {}).items():
        path_params = "{" in path
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            permission = operation.pop(AUTH_MARK, None)
            particular = operation.pop(RESPONSES_MARK, {})
            idempotent = operation.pop(IDEMPOTENT_MARK, False)
            has_body = "requestBody" in operation
            statuses = {"414", "422"}
            if not set(operation.get("tags", [])) & unlimited_tags:
                statuses.add("429")
            if permission is None:
                operation["security"] = []
            else:
                operation["security"] = [{"bearerAuth": []}]
                statuses.add("401")
                if permission not in public_permissions:
                    statuses.add("403")
            if path_params:
                statuses.add("404")
            if has_body:
                statuses |= {"400", "413", "415"}
            if idempotent:
                operation.setdefault("parameters", []).append(IDEMPOTENCY_PARAMETER)
                statuses.add("409")
            dialect = _dialect_of(operation, dialects)
            if dialect is not None:
                _document_dialect_errors(operation, dialect, statuses, particular)
            documented = operation.setdefault("responses", {})
            for status in sorted(statuses | set(particular)) if dialect is None else ():
                if status in particular and status not in STANDARD_RESPONSES:
                    documented[status] = {
                        "description": particular[status],
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
                elif status in particular:
                    documented[status] = {
                        **_error_response(status),
                        "description": particular[status],
                    }
                else:
                    documented[status] = {
                        "$ref": f"#/components/responses/{STANDARD_RESPONSES[status][0]}"
                    }
            for response in documented.values() if dialect is None else ():
                if "$ref" not in response:
                    response.setdefault("headers", {}).update(HEADERS)
            operation_id = operation.get("operationId") or _operation_id(method, path)
            while operation_id in seen_ids:
                operation_id += "_"
            seen_ids.add(operation_id)
            operation["operationId"] = operation_id
    return document
