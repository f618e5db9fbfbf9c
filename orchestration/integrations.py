"""Provider integrations of an organization (admins only), and the catalog they make.

Two kinds, chosen by the name:
- ``key``: the name of an operator provider (``openai``, ``groq``, or one of
  BATON_PROVIDERS): the organization's own API key for it, which wins over the
  environment's key for the organization's jobs;
- ``custom``: any other name: the organization's own OpenAI-compatible server (base_url,
  models, optional key, timeout and prices).

A third kind, ``task_server`` (asked for with ``kind``), is an external executor (seed
000's Task Master): a base URL and an optional key that agents with ``executor:
external`` submit their steps to (workers/external.py). It is never a model provider.

Keys are encrypted with Fernet before they are stored (refused with a 422 when no
BATON_ENCRYPTION_KEY is configured), decrypted only by the worker that makes the call,
and never returned: a response says whether a key is set, nothing more.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import PROVIDER_NAME, get_settings
from models import Integration, utcnow
from models.db import transaction
from orchestration import egress, model_catalog, secrets
from orchestration.errors import Conflict, ValidationFailed, field_error
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.model_catalog import Catalog, ProviderContext, ProviderSpec
from orchestration.ownership import get_owned
from orchestration.principal import Principal

KEY, CUSTOM, TASK_SERVER = "key", "custom", "task_server"
PROVIDER_ROW = "provider"  # Integration.kind of the key and custom kinds
CUSTOM_ONLY = ("base_url", "models", "prices", "timeout_seconds", "max_tokens_param")
SORTS = {"name": Integration.name, "created_at": Integration.created_at}


@dataclass
class IntegrationView:
    integration: Integration
    kind: str

    @property
    def api_key_set(self) -> bool:
        return bool(self.integration.encrypted_api_key)


def kind_of(name: str) -> str:
    return KEY if name in model_catalog.providers() else CUSTOM


def _view(row: Integration) -> IntegrationView:
    return IntegrationView(row, TASK_SERVER if row.kind == TASK_SERVER else kind_of(row.name))


def validate_base_url(url: str, field_name: str = "base_url") -> None:
    """The outbound rule every organization-configured URL follows: the egress guard
    (an http(s) URL whose host resolves to no internal address; a 422 otherwise)."""
    egress.check_url_field(url, field_name=field_name)


# -- the catalog an organization sees (session in, never commit) ---------------------------


def _enabled(session: Session, organization_id: uuid.UUID) -> list[Integration]:
    return list(
        session.scalars(
            sa.select(Integration).where(
                Integration.organization_id == organization_id,
                Integration.enabled.is_(True),
                Integration.kind == PROVIDER_ROW,
            )
        )
    )


def _spec(row: Integration) -> ProviderSpec:
    extra = {"max_tokens_param": row.max_tokens_param} if row.max_tokens_param else {}
    prices = {
        model: {k: Decimal(str(v)) for k, v in price.items()}
        for model, price in (row.prices or {}).items()
    }
    return ProviderSpec(
        row.name, row.base_url or "", None, tuple(row.models or ()),
        float(row.timeout_seconds or 60), extra, prices, owner=str(row.organization_id),
    )  # fmt: skip


def _catalog(rows: list[Integration]) -> Catalog:
    specs = model_catalog.providers()
    for row in rows:
        if row.name not in specs and row.base_url:
            specs[row.name] = _spec(row)
    return Catalog(specs)


def catalog_for(session: Session, *, organization_id: uuid.UUID) -> Catalog:
    """The operator's providers plus the organization's own enabled servers."""
    return _catalog(_enabled(session, organization_id))


def provider_context(session: Session, *, organization_id: uuid.UUID) -> ProviderContext:
    """For a worker about to call a provider: the catalog, and the organization's keys
    decrypted (a stored key that cannot be decrypted is reported, never skipped: the
    organization's jobs must not silently run on the operator's key)."""
    rows = _enabled(session, organization_id)
    keys: dict[str, str] = {}
    problems: dict[str, str] = {}
    for row in rows:
        if not row.encrypted_api_key:
            continue
        try:
            keys[row.name] = secrets.decrypt(row.encrypted_api_key)
        except secrets.SecretUnreadable as exc:
            problems[row.name] = f"the organization's key for '{row.name}' is unreadable: {exc}"
    return ProviderContext(
        catalog=_catalog(rows),
        keys=keys,
        key_problems=problems,
        org_scoped=frozenset(r.name for r in rows if r.encrypted_api_key or r.base_url),
        organization_id=str(organization_id),
    )


# -- a worker's cache of provider contexts ------------------------------------------------

_CACHED_ORGANIZATIONS = 256
_contexts: dict[str, tuple[tuple[str, int], ProviderContext]] = {}


def version_of(organization_id: Any) -> sa.ScalarSelect[str]:
    """A fingerprint of the organization's provider integrations, cheap enough to read
    with every step (a scalar subquery in the claim's own query): their number and their
    latest ``updated_at`` change with every insert, update (a key, a toggle) and delete."""
    return (
        sa.select(
            sa.cast(sa.func.count(Integration.id), sa.String)
            + "/"
            + sa.func.coalesce(sa.cast(sa.func.max(Integration.updated_at), sa.String), "")
        )
        .where(Integration.organization_id == organization_id, Integration.kind == PROVIDER_ROW)
        .scalar_subquery()
    )


def cached_provider_context(
    session: Session, *, organization_id: uuid.UUID, version: str
) -> ProviderContext:
    """``provider_context``, read and decrypted again only when the organization's
    ``version_of`` changed (or the process's settings were reloaded). Per process: a
    worker keeps the decrypted keys of the organizations it recently ran steps for (at
    most a few hundred), which it holds during each of their steps anyway."""
    key = (version, id(get_settings()))
    cached = _contexts.get(str(organization_id))
    if cached is not None and cached[0] == key:
        return cached[1]
    context = provider_context(session, organization_id=organization_id)
    if len(_contexts) >= _CACHED_ORGANIZATIONS:
        _contexts.pop(next(iter(_contexts)))  # the oldest entry
    _contexts[str(organization_id)] = (key, context)
    return context


# -- validation ---------------------------------------------------------------------------


def _check_custom(data: dict[str, Any]) -> None:
    if not data.get("base_url"):
        raise field_error("base_url", "required for a provider Baton does not know")
    # A tenant must not aim workers at internal hosts (checked again at call time).
    egress.check_url_field(data["base_url"], field_name="base_url")
    models = data.get("models") or []
    if not models:
        raise field_error("models", "required for a provider Baton does not know")
    prices = data.get("prices") or {}
    for model in prices:
        if model not in models:
            raise field_error(f"prices.{model}", "not one of the integration's models")
    spec = ProviderSpec(data["name"], data["base_url"], None, tuple(models), prices=prices)
    catalog = Catalog({data["name"]: spec})
    for index, model in enumerate(models):
        try:
            catalog.price_for(model_catalog.ResolvedModel(data["name"], model))
        except ValidationFailed:
            raise field_error(
                f"models.{index}", f"'{model}' has no price: give one in prices"
            ) from None


def _validate(data: dict[str, Any], *, creating: bool) -> str:
    name = data["name"]
    if not PROVIDER_NAME.match(name):
        raise field_error("name", f"must match {PROVIDER_NAME.pattern}")
    if name == "sim":
        raise field_error("name", "'sim' is the built-in offline provider; it needs no integration")
    if data.get("kind") == TASK_SERVER:
        if name in model_catalog.providers():
            raise field_error("name", f"'{name}' is a provider's name; name the task server")
        if not data.get("base_url"):
            raise field_error("base_url", "required for a task server")
        validate_base_url(data["base_url"])
        for key in ("models", "prices", "max_tokens_param"):
            if data.get(key) not in (None, [], {}):
                raise field_error(key, "a task server has no models")
        return TASK_SERVER
    kind = kind_of(name)
    if kind == KEY:
        for key in CUSTOM_ONLY:
            if data.get(key) not in (None, [], {}):
                raise field_error(
                    key, f"'{name}' is configured by the operator: only api_key can be set"
                )
        if creating and not data.get("api_key"):
            raise field_error("api_key", f"required: the organization's key for '{name}'")
    else:
        _check_custom(data)
    return kind


def _prices_json(prices: dict[str, Any] | None) -> dict[str, Any]:
    return {m: {k: str(v) for k, v in p.items()} for m, p in (prices or {}).items()}


def _apply(row: Integration, data: dict[str, Any]) -> None:
    for key in ("base_url", "models", "timeout_seconds", "max_tokens_param", "enabled"):
        if key in data:
            setattr(row, key, data[key])
    if "prices" in data:
        row.prices = _prices_json(data["prices"])
    if "api_key" in data:
        key = data["api_key"]
        row.encrypted_api_key = secrets.encrypt(key) if key else None


# -- commands and queries ------------------------------------------------------------------


def _owned(session: Session, principal: Principal, integration_id: uuid.UUID) -> Integration:
    return get_owned(
        session, Integration, integration_id, organization_id=principal.organization_id
    )


def create_integration(
    sessions: sessionmaker[Session], *, principal: Principal, data: dict[str, Any]
) -> IntegrationView:
    kind = _validate(data, creating=True)
    row = Integration(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        name=data["name"],
        models=[],
        prices={},
        enabled=True,
        kind=TASK_SERVER if kind == TASK_SERVER else PROVIDER_ROW,
    )
    _apply(row, data)
    try:
        with transaction(sessions) as session:
            if session.scalar(
                sa.select(Integration.id).where(
                    Integration.organization_id == principal.organization_id,
                    Integration.name == row.name,
                )
            ):
                raise Conflict(
                    f"an integration named '{row.name}' already exists",
                    [{"field": "name", "message": "already in use"}],
                )
            session.add(row)
            session.flush()
    except IntegrityError:  # a concurrent create with the same name
        raise Conflict(f"an integration named '{row.name}' already exists") from None
    return IntegrationView(row, kind)


def update_integration(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    integration_id: uuid.UUID,
    changes: dict[str, Any],
) -> IntegrationView:
    """Partial: fields given replace stored ones; ``api_key: null`` removes the key."""
    with transaction(sessions) as session:
        row = _owned(session, principal, integration_id)
        merged = {
            "kind": row.kind,
            "name": row.name,
            "base_url": row.base_url,
            "models": list(row.models or []),
            "prices": row.prices or {},
            "timeout_seconds": row.timeout_seconds,
            "max_tokens_param": row.max_tokens_param,
            **changes,
        }
        kind = _validate(merged, creating=False)
        _apply(row, changes)
        row.updated_at = utcnow()
        session.flush()
        return IntegrationView(row, kind)


def get_integration(
    sessions: sessionmaker[Session], *, principal: Principal, integration_id: uuid.UUID
) -> IntegrationView:
    with sessions() as session:
        return _view(_owned(session, principal, integration_id))


def list_integrations(
    sessions: sessionmaker[Session], *, principal: Principal, page: PageRequest
) -> Page[IntegrationView]:
    stmt = sa.select(Integration).where(Integration.organization_id == principal.organization_id)
    stmt = apply_sort(stmt, page.sort, SORTS, Integration.name.asc()).order_by(Integration.id)
    with sessions() as session:
        result = paginate(session, stmt, page)
    result.items = [_view(row) for row in result.items]
    return result


def delete_integration(
    sessions: sessionmaker[Session], *, principal: Principal, integration_id: uuid.UUID
) -> None:
    """Agents naming the provider are refused at their next submission (422)."""
    with transaction(sessions) as session:
        session.delete(_owned(session, principal, integration_id))


def task_servers_state(session: Session, *, organization_id: uuid.UUID) -> str:
    """Seed 000's ``task_master`` health word for an organization: ``connected`` with an
    enabled task server, ``disabled`` with only disabled ones, else ``not_configured``
    (read from the integrations; health never calls an organization's server)."""
    enabled = session.scalars(
        sa.select(Integration.enabled).where(
            Integration.organization_id == organization_id, Integration.kind == TASK_SERVER
        )
    ).all()
    if any(enabled):
        return "connected"
    return "disabled" if enabled else "not_configured"


def task_server(session: Session, *, organization_id: uuid.UUID, name: str) -> Integration | None:
    """The organization's enabled task server called ``name`` (session in, never commit)."""
    return session.scalar(
        sa.select(Integration).where(
            Integration.organization_id == organization_id,
            Integration.name == name,
            Integration.kind == TASK_SERVER,
            Integration.enabled.is_(True),
        )
    )
