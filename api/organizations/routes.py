"""GET/PUT /organizations/current."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.organizations.schemas import OrganizationSchema, OrganizationUpdateSchema
from api.security import current_principal, requires, sessions
from orchestration import accounts

blp = Blueprint(
    "organizations", __name__, url_prefix="/api/v1/organizations", description="Organizations"
)


@blp.route("/current")
class CurrentOrganization(MethodView):
    @requires()
    @blp.response(200, OrganizationSchema)
    def get(self):
        """The caller's organization."""
        return accounts.get_organization(sessions(), principal=current_principal())

    @requires("organization:write")
    @blp.arguments(OrganizationUpdateSchema)
    @blp.response(200, OrganizationSchema)
    def put(self, data: dict[str, Any]):
        """Rename the organization or change its settings (admin only)."""
        return accounts.update_organization(
            sessions(),
            principal=current_principal(),
            name=data.get("name"),
            settings=data.get("settings"),
            require_2fa=data.get("require_2fa"),
        )
