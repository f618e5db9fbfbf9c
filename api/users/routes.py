"""GET/PUT /users/me; GET/POST /users (admins, own organization only)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.openapi import answers
from api.common.schemas import page_request
from api.security import current_principal, requires, sessions
from api.users.schemas import (
    UserCreateSchema,
    UserListArgsSchema,
    UserListSchema,
    UserSchema,
    UserUpdateSchema,
)
from orchestration import accounts

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="Users")


@blp.route("/me")
class Me(MethodView):
    @requires()
    @blp.response(200, UserSchema)
    def get(self):
        """The caller's profile."""
        return accounts.get_current_user(sessions(), principal=current_principal())

    @requires()
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @answers(409, "The email or username is taken.")
    def put(self, changes: dict[str, Any]):
        """Change the caller's email, password, full name or username (409 if taken)."""
        return accounts.update_current_user(
            sessions(), principal=current_principal(), changes=changes
        )


@blp.route("")
class Users(MethodView):
    @requires("user:admin")
    @blp.arguments(UserListArgsSchema, location="query")
    @blp.response(200, UserListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's users (admin only; filter by role)."""
        page = accounts.list_users(
            sessions(),
            principal=current_principal(),
            role=args.get("role"),
            page=page_request(args),
        )
        # The list schema dumps the Page (items, total, limit, offset) itself.
        return page

    @requires("user:admin")
    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    @answers(409, "The email or username is taken.")
    def post(self, data: dict[str, Any]):
        """Add a user with a role to the caller's organization (admin only)."""
        return accounts.create_user(
            sessions(), principal=current_principal(), new_user=accounts.NewUser(**data)
        )
