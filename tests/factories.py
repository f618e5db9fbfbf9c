"""Factories: real rows through a real session; tokens minted with the app's JWT config."""

from __future__ import annotations

import uuid
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from models import Agent, Organization, Project, Role, User

_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
DEFAULT_PASSWORD = "correct horse battery staple"


def organization(session: Session, **fields: Any) -> Organization:
    suffix = uuid.uuid4().hex[:8]
    org = Organization(name=fields.pop("name", f"Org {suffix}"), slug=f"org-{suffix}", **fields)
    session.add(org)
    session.flush()
    return org


def user(session: Session, org: Organization | None = None, **fields: Any) -> User:
    org = org or organization(session)
    suffix = uuid.uuid4().hex[:8]
    row = User(
        organization_id=org.id,
        email=fields.pop("email", f"user-{suffix}@example.com"),
        username=fields.pop("username", f"user_{suffix}"),
        password_hash=_hasher.hash(fields.pop("password", DEFAULT_PASSWORD)),
        role=fields.pop("role", Role.ADMIN.value),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def project(session: Session, org: Organization, **fields: Any) -> Project:
    row = Project(organization_id=org.id, name=fields.pop("name", "Project"), **fields)
    session.add(row)
    session.flush()
    return row


def agent(session: Session, org: Organization, **fields: Any) -> Agent:
    config = fields.pop("config", {"providers": ["sim"], "max_retries": 2, "timeout_seconds": 30})
    row = Agent(organization_id=org.id, name=fields.pop("name", "Agent"), config=config, **fields)
    session.add(row)
    session.flush()
    return row


def auth_headers(app: Any, row: User) -> dict[str, str]:
    from api.auth.tokens import access_token_for

    with app.app_context():
        token = access_token_for(
            user_id=str(row.id), organization_id=str(row.organization_id), role=row.role
        )
    return {"Authorization": f"Bearer {token}"}
