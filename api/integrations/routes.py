"""CRUD /integrations: an organization's own provider servers and keys (admins only)."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.openapi import answers
from api.common.schemas import page_request
from api.integrations.schemas import (
    IntegrationCreateSchema,
    IntegrationListArgsSchema,
    IntegrationListSchema,
    IntegrationSchema,
    IntegrationUpdateSchema,
    present_integration,
)
from api.security import current_principal, requires, sessions
from orchestration import integrations

blp = Blueprint(
    "integrations",
    __name__,
    url_prefix="/api/v1/integrations",
    description="Provider integrations (admins)",
)


@blp.route("")
class Integrations(MethodView):
    @requires("integration:admin")
    @blp.arguments(IntegrationListArgsSchema, location="query")
    @blp.response(200, IntegrationListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's integrations (sort: name, created_at)."""
        page = integrations.list_integrations(
            sessions(), principal=current_principal(), page=page_request(args)
        )
        page.items = [present_integration(view) for view in page.items]
        return page

    @requires("integration:admin")
    @blp.arguments(IntegrationCreateSchema)
    @blp.response(201, IntegrationSchema)
    @answers(409, "An integration with this name exists.")
    def post(self, data: dict[str, Any]):
        """Add a provider server, or the organization's own key for a known provider.
        A key is stored encrypted (422 when no BATON_ENCRYPTION_KEY is configured)."""
        view = integrations.create_integration(sessions(), principal=current_principal(), data=data)
        return present_integration(view)


@blp.route("/<uuid:integration_id>")
class IntegrationById(MethodView):
    @requires("integration:admin")
    @blp.response(200, IntegrationSchema)
    def get(self, integration_id: uuid.UUID):
        """One integration (``api_key_set`` says whether a key is stored)."""
        view = integrations.get_integration(
            sessions(), principal=current_principal(), integration_id=integration_id
        )
        return present_integration(view)

    @requires("integration:admin")
    @blp.arguments(IntegrationUpdateSchema)
    @blp.response(200, IntegrationSchema)
    @answers(409, "An integration with this name exists.")
    def put(self, changes: dict[str, Any], integration_id: uuid.UUID):
        """Change fields given; ``"api_key": null`` removes the stored key."""
        view = integrations.update_integration(
            sessions(), principal=current_principal(), integration_id=integration_id,
            changes=changes,
        )  # fmt: skip
        return present_integration(view)

    @requires("integration:admin")
    @blp.arguments(IntegrationUpdateSchema)
    @blp.response(200, IntegrationSchema)
    @answers(409, "An integration with this name exists.")
    def patch(self, changes: dict[str, Any], integration_id: uuid.UUID):
        """Same as PUT: partial."""
        view = integrations.update_integration(
            sessions(), principal=current_principal(), integration_id=integration_id,
            changes=changes,
        )  # fmt: skip
        return present_integration(view)

    @requires("integration:admin")
    @blp.response(204)
    def delete(self, integration_id: uuid.UUID):
        """Remove it; agents naming the provider are refused at their next submission."""
        integrations.delete_integration(
            sessions(), principal=current_principal(), integration_id=integration_id
        )
