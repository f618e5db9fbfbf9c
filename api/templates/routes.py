"""CRUD /templates: the organization's own, built-in and public phase templates."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.schemas import page_request
from api.security import current_principal, requires, sessions
from api.templates.schemas import (
    TemplateCreateSchema,
    TemplateListArgsSchema,
    TemplateListSchema,
    TemplateSchema,
    TemplateUpdateSchema,
)
from orchestration import templates

blp = Blueprint("templates", __name__, url_prefix="/api/v1/templates", description="Templates")


@blp.route("")
class Templates(MethodView):
    @requires()
    @blp.arguments(TemplateListArgsSchema, location="query")
    @blp.response(200, TemplateListSchema)
    def get(self, args: dict[str, Any]):
        """Own, built-in and public templates (filters: category, is_public, search)."""
        filters = templates.TemplateFilters(
            category=args.get("category"),
            is_public=args.get("is_public"),
            search=args.get("search"),
        )
        page = templates.list_templates(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )
        # The list schema dumps the Page (items, total, limit, offset) itself.
        return page

    @requires("template:write")
    @blp.arguments(TemplateCreateSchema)
    @blp.response(201, TemplateSchema)
    def post(self, data: dict[str, Any]):
        """Create a template of phases for orchestrations."""
        return templates.create_template(sessions(), principal=current_principal(), data=data)


@blp.route("/<uuid:template_id>")
class TemplateById(MethodView):
    @requires()
    @blp.response(200, TemplateSchema)
    def get(self, template_id: uuid.UUID):
        """A visible template."""
        return templates.get_template(
            sessions(), principal=current_principal(), template_id=template_id
        )

    @requires("template:write")
    @blp.arguments(TemplateUpdateSchema)
    @blp.response(200, TemplateSchema)
    def put(self, changes: dict[str, Any], template_id: uuid.UUID):
        """Update an own template (403 for built-in or other organizations' public ones)."""
        return templates.update_template(
            sessions(), principal=current_principal(), template_id=template_id, changes=changes
        )

    @requires("template:write")
    @blp.arguments(TemplateUpdateSchema)
    @blp.response(200, TemplateSchema)
    def patch(self, changes: dict[str, Any], template_id: uuid.UUID):
        """Same as PUT."""
        return templates.update_template(
            sessions(), principal=current_principal(), template_id=template_id, changes=changes
        )

    @requires("template:write")
    @blp.response(204)
    def delete(self, template_id: uuid.UUID):
        """Delete an own template."""
        templates.delete_template(
            sessions(), principal=current_principal(), template_id=template_id
        )
