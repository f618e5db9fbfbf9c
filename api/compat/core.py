"""The shared core of every seed dialect (issue 15).

A dialect is one seed document served exactly as written, at its own base URL, as a thin
adapter over the same orchestration functions the canonical views call. What a dialect
supplies, and nothing more:

- its **blueprint** (``Dialect.blueprint``): routes at its base URL (and, for seed 004,
  also at the root), one OpenAPI tag, views that validate, authorise, call ONE
  orchestration function and serialise with the dialect's own marshmallow schemas;
- its **error shape** (``Dialect.error_body``) and **status map** (``status_map``, e.g.
  seed 000 answers validation with 400 where Baton answers 422): every error Baton raises
  anywhere on the way (the edge's 413/414/415/NUL 422, webargs/marshmallow 422, auth 401,
  403, another organization's id 404, 409, 429 from the limiter) is built by
  ``api.errors.error_response``, which hands it to the request's dialect;
- its **status words** (``StatusWords``: Baton's job states -> the document's words);
- its **list envelope** (a schema with ``page_meta``) over ``LimitOffsetArgsSchema``;
- its **token claims** (``token_issuer``: the canonical JWTs plus the claims it needs).

See docs/dialects.md for how to add one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from flask import Response, jsonify, request, url_for
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api.compat import registry
from models.base import utcnow
from orchestration.listing import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Page, PageRequest


@dataclass(frozen=True)
class Problem:
    """An error as Baton raised it, before a dialect shapes it."""

    status: int
    code: str  # Baton's code: VALIDATION_ERROR, RESOURCE_NOT_FOUND, ...
    message: str
    details: Any
    request_id: str

    @property
    def field_messages(self) -> list[dict[str, str]]:
        """``details`` as [{"field", "message"}] when it is a validation error's list."""
        if not isinstance(self.details, list):
            return []
        return [d for d in self.details if isinstance(d, dict) and "field" in d]

    def summary(self) -> str:
        """The message, with the first field messages for a person to read."""
        parts = [f"{d['field']}: {d['message']}" for d in self.field_messages[:5]]
        return f"{self.message} ({'; '.join(parts)})" if parts else self.message


def timestamp() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


class DialectBlueprint(Blueprint):
    """A flask-smorest blueprint whose operations all carry the dialect's one tag, under
    whatever name (mount) it is registered."""

    def __init__(self, dialect: Dialect, import_name: str) -> None:
        super().__init__(
            dialect.name, import_name, url_prefix=dialect.base, description=dialect.description
        )
        self.dialect = dialect

    def register_views_in_doc(self, api, app, spec, *, name, parameters):  # type: ignore[no-untyped-def]
        for endpoint_doc in self._docs.values():
            for method, operation in endpoint_doc.items():
                if method != "parameters" and operation.get("tags") is None:
                    operation["tags"] = [self.dialect.tag]
        return super().register_views_in_doc(api, app, spec, name=name, parameters=parameters)


class Dialect:
    """One seed document. Subclasses set the class attributes and ``error_body``."""

    name: ClassVar[str]  # blueprint name, a Python identifier: "vel_tutor"
    tag: ClassVar[str]  # the OpenAPI tag: "Dialect: seed 000 vel_tutor"
    description: ClassVar[str]
    base: ClassVar[str]  # "/compat/vel-tutor/api/v1"
    # Also mounted at the root (seed 004), under these path prefixes (checked at install
    # to stay clear of the canonical /api/v1).
    root_prefixes: ClassVar[tuple[str, ...]] = ()
    # Baton's status -> the document's (422 -> 400 for seed 000); the rest stay.
    status_map: ClassVar[dict[int, int]] = {}
    # Extra statuses every authenticated operation may answer (seed 004: 403 without a token).
    auth_statuses: ClassVar[tuple[int, ...]] = (401,)
    error_schema: ClassVar[type[Schema]]  # documents error_body's shape
    # The document's own rate limits, by bucket: "ip" (per client address), "user" (per
    # user; anonymous callers per address), "organization" (per tenant, authenticated
    # only), as Flask-Limiter strings ("100 per minute;1000 per hour"). Counted in the
    # dialect's own buckets on top of Baton's per-user and per-organization ones (each
    # request once in each); api.ratelimits reads them through ``rate_limit``.
    rate_limits: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._blueprint: DialectBlueprint | None = None

    def rate_limit(self, kind: str) -> str | None:
        """This request's limit for a bucket ``kind``: ``BATON_DIALECT_RATE_LIMITS``
        (``{dialect name: {kind: limit}}``, e.g. tests raising them) else the document's."""
        from flask import current_app

        configured = current_app.config.get("BATON_DIALECT_RATE_LIMITS") or {}
        own = configured.get(self.name) or {}
        return own[kind] if kind in own else self.rate_limits.get(kind)

    # -- errors ---------------------------------------------------------------------------

    def error_body(self, problem: Problem) -> dict[str, Any]:
        raise NotImplementedError

    def status_for(self, problem: Problem) -> int:
        return self.status_map.get(problem.status, problem.status)

    def respond(self, problem: Problem) -> Response:
        problem = replace(problem, status=self.status_for(problem))
        response = jsonify(self.error_body(problem))
        response.status_code = problem.status
        return response

    # -- the OpenAPI document (read by api.common.openapi.finalize) ------------------------

    @property
    def error_component(self) -> str:
        return self.error_schema.__name__.removesuffix("Schema")

    @property
    def error_ref(self) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{self.error_component}"}

    def documented_statuses(self, statuses: set[str], *, authenticated: bool) -> set[str]:
        out = {str(self.status_map.get(int(s), int(s))) for s in statuses}
        if authenticated:
            out |= {str(s) for s in self.auth_statuses}
        return out

    # -- routes -----------------------------------------------------------------------------

    @property
    def blueprint(self) -> DialectBlueprint:
        if self._blueprint is None:
            self._blueprint = DialectBlueprint(self, type(self).__module__)
        return self._blueprint

    def mounts(self) -> list[tuple[str, str]]:
        """(url_prefix, registration name) for each place the dialect is served."""
        out = [(self.base, self.name)]
        if self.root_prefixes:
            out.append(("", f"{self.name}_root"))
        return out

    def prefixes(self) -> list[str]:
        return [self.base + "/", *self.root_prefixes]

    def install(self, api: Any) -> None:
        spec_schemas = api.spec.components.schemas
        if self.error_component not in spec_schemas:
            api.spec.components.schema(self.error_component, schema=self.error_schema)
        names = []
        for url_prefix, name in self.mounts():
            api.register_blueprint(self.blueprint, url_prefix=url_prefix, name=name)
            names.append(name)
        if self.root_prefixes:
            self._check_root_routes(api._app)
        # One tag for the dialect in the document's tag list (flask-smorest adds one per
        # registration name, which no operation of ours uses).
        tags = [t for t in api.spec._tags if t.get("name") not in names]
        if not any(t.get("name") == self.tag for t in tags):
            tags.append({"name": self.tag, "description": self.description})
        api.spec._tags[:] = tags
        registry.register(self, blueprint_names=names, prefixes=self.prefixes())

    def _check_root_routes(self, app: Any) -> None:
        """A root route must sit under a declared root prefix, clear of /api/v1."""
        for rule in app.url_map.iter_rules():
            if rule.endpoint.startswith(f"{self.name}_root."):
                path = rule.rule
                if path.startswith("/api/v1") or not path.startswith(self.root_prefixes):
                    raise RuntimeError(f"{self.name}: root route {path} collides or is undeclared")

    def url_for(self, endpoint: str, **values: Any) -> str:
        """A URL in the mount the request came through (root or base)."""
        return url_for(f"{request.blueprint}.{endpoint}", **values)


# -- status words ---------------------------------------------------------------------------


class StatusWords:
    """Baton's job states <-> a document's words (several states may share a word)."""

    def __init__(self, words: dict[str, str]) -> None:
        self.words = dict(words)

    def word(self, status: str) -> str:
        return self.words.get(status, status)

    def statuses(self, words: Iterable[str]) -> list[str]:
        """The Baton states a filter of document words means."""
        wanted = set(words)
        return [status for status, word in self.words.items() if word in wanted]

    def enum(self) -> list[str]:
        return sorted(set(self.words.values()))


# -- lists ----------------------------------------------------------------------------------


class LimitOffsetArgsSchema(Schema):
    """``?limit=&offset=`` as seeds 000 and 004 page (unknown parameters are a 4xx)."""

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


def page_request(args: dict[str, Any]) -> PageRequest:
    return PageRequest(limit=args.get("limit", DEFAULT_LIMIT), offset=args.get("offset", 0))


def page_meta(page: Page[Any]) -> dict[str, int]:
    return {"total": page.total, "limit": page.limit, "offset": page.offset}


def mapped(page: Page[Any], present: Callable[[Any], Any]) -> Page[Any]:
    """The same page with each row presented for the dialect."""
    return replace(page, items=[present(item) for item in page.items])


# -- tokens ---------------------------------------------------------------------------------


def token_issuer(
    *,
    subject: Callable[[Any], str] | None = None,
    claims: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[..., Any]:
    """An ``issue(user, family_id)`` for ``orchestration.accounts`` login/refresh: the
    canonical token pair (same signing, expiry, revocation; ``uid`` names the user), with
    the dialect's ``sub`` and extra claims."""
    from api.auth.tokens import issue_pair

    def issue(user: Any, family_id: Any) -> Any:
        return issue_pair(
            user,
            family_id,
            subject=subject(user) if subject else None,
            extra_claims=claims(user) if claims else None,
        )

    return issue


def password_sign_in(data: dict[str, Any], *, issue: Callable[..., Any]) -> Any:
    """``accounts.login`` for a dialect's login route (email or username, and password):
    the signed-in ``accounts.SignIn``. These documents have no second-factor step, so an
    account that needs one is sent to the canonical login instead of half signed in."""
    from api.security import sessions
    from orchestration import accounts
    from orchestration.errors import AuthenticationRequired

    signin = accounts.login(
        sessions(),
        email=data.get("email"),
        username=data.get("username"),
        password=data["password"],
        issue=issue,
    )
    if isinstance(signin, accounts.SecondFactorRequired):
        raise AuthenticationRequired(
            "This account signs in with two factors: use /api/v1/auth/login"
        )
    return signin
