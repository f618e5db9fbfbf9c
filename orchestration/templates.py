"""Phase templates: an organization's own, plus built-in (no organization) and public ones.

A template is visible to an organization if it owns it, if it is built in, or if another
organization made it public; only the owner may change or delete it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Template, User, utcnow
from models.db import transaction
from orchestration import model_catalog
from orchestration.accounts import users_by_id
from orchestration.errors import Forbidden, NotFound, ValidationFailed, field_error
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.principal import Principal
from orchestration.projects import like_pattern

SORTS = {
    "name": Template.name,
    "category": Template.category,
    "usage_count": Template.usage_count,
    "created_at": Template.created_at,
    "updated_at": Template.updated_at,
}


@dataclass
class TemplateFilters:
    category: str | None = None
    is_public: bool | None = None
    search: str | None = None


@dataclass
class TemplateView:
    template: Template
    created_by: User | None = None


def _visible(principal: Principal) -> sa.ColumnElement[bool]:
    return sa.or_(
        Template.organization_id == principal.organization_id,
        Template.organization_id.is_(None),
        Template.is_public.is_(True),
    )


def validate_template_data(data: dict[str, Any]) -> None:
    """A model named in the settings must exist, as it would fail every run otherwise."""
    settings = data.get("settings") or {}
    for key in ("ai_model", "model"):
        model = settings.get(key)
        if model is None:
            continue
        field_name = f"template_data.settings.{key}"
        if not isinstance(model, str) or not model:
            raise field_error(field_name, "must be a model name")
        try:
            model_catalog.resolve_model(model)
        except ValidationFailed as exc:
            message = exc.details[0]["message"] if exc.details else exc.message
            raise field_error(field_name, message) from exc


# -- helpers (session in, never commit) ---------------------------------------------------


def visible_template(session: Session, *, principal: Principal, template_id: uuid.UUID) -> Template:
    template = session.scalar(
        sa.select(Template).where(Template.id == template_id, _visible(principal))
    )
    if template is None:
        raise NotFound(
            f"Template {template_id} not found", [{"field": "template_id", "message": "not found"}]
        )
    return template


def _owned_template(session: Session, principal: Principal, template_id: uuid.UUID) -> Template:
    template = visible_template(session, principal=principal, template_id=template_id)
    if template.organization_id != principal.organization_id:
        # Visible (built in or another organization's public one) but not ours to change.
        raise Forbidden("Only the organization that owns a template can change it")
    return template


def _view(session: Session, template: Template) -> TemplateView:
    creators = users_by_id(session, ids=[template.created_by_id])
    return TemplateView(template, creators.get(template.created_by_id))  # type: ignore[arg-type]


# -- commands and queries ------------------------------------------------------------------


def create_template(
    sessions: sessionmaker[Session], *, principal: Principal, data: dict[str, Any]
) -> TemplateView:
    validate_template_data(data["template_data"])
    with transaction(sessions) as session:
        template = Template(
            organization_id=principal.organization_id,
            created_by_id=principal.user_id,
            name=data["name"],
            description=data.get("description"),
            category=data.get("category") or "custom",
            is_public=bool(data.get("is_public", False)),
            template_data=data["template_data"],
        )
        session.add(template)
        session.flush()
        return _view(session, template)


def list_templates(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    filters: TemplateFilters,
    page: PageRequest,
) -> Page[TemplateView]:
    stmt = sa.select(Template).where(_visible(principal))
    if filters.category:
        stmt = stmt.where(Template.category == filters.category)
    if filters.is_public is not None:
        stmt = stmt.where(Template.is_public.is_(filters.is_public))
    if filters.search:
        pattern = like_pattern(filters.search)
        stmt = stmt.where(
            sa.or_(
                Template.name.ilike(pattern, escape="\\"),
                Template.description.ilike(pattern, escape="\\"),
            )
        )
    stmt = apply_sort(stmt, page.sort, SORTS, Template.created_at.desc()).order_by(Template.id)
    with sessions() as session:
        result = paginate(session, stmt, page)
        creators = users_by_id(session, ids=[t.created_by_id for t in result.items])
    items = [TemplateView(t, creators.get(t.created_by_id)) for t in result.items]
    return result.with_items(items)


def get_template(
    sessions: sessionmaker[Session], *, principal: Principal, template_id: uuid.UUID
) -> TemplateView:
    with sessions() as session:
        return _view(
            session, visible_template(session, principal=principal, template_id=template_id)
        )


def update_template(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    template_id: uuid.UUID,
    changes: dict[str, Any],
) -> TemplateView:
    if "template_data" in changes:
        validate_template_data(changes["template_data"])
    with transaction(sessions) as session:
        template = _owned_template(session, principal, template_id)
        for name in ("name", "description", "category", "is_public", "template_data"):
            if name in changes:
                setattr(template, name, changes[name])
        template.updated_at = utcnow()
        session.flush()
        return _view(session, template)


def delete_template(
    sessions: sessionmaker[Session], *, principal: Principal, template_id: uuid.UUID
) -> None:
    """Jobs made from the template keep their phases (template_id SET NULL)."""
    with transaction(sessions) as session:
        session.delete(_owned_template(session, principal, template_id))
