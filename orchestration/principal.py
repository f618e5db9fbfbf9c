"""Who is calling: what every orchestration function is scoped by."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from models.identity import Role

PERMISSIONS: dict[str, tuple[str, ...]] = {
    Role.ADMIN: (
        "job:create", "job:read", "job:cancel", "project:write", "agent:write",
        "template:write", "user:admin", "organization:write", "budget:write",
        "emergency:write", "integration:admin", "job:cancel_any", "webhook:admin",
    ),
    Role.MANAGER: (
        "job:create", "job:read", "job:cancel", "project:write", "agent:write",
        "template:write", "budget:write", "job:cancel_any", "webhook:admin",
    ),
    Role.MEMBER: ("job:create", "job:read", "job:cancel", "project:write", "agent:write",
                  "template:write"),
    Role.VIEWER: ("job:read",),
}  # fmt: skip


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    organization_id: uuid.UUID
    role: str
    # What the request's token check read: whether the organization has an active
    # ``block`` budget limit. False lets a submission skip its budget read (no limit can
    # make it a 402); None (not known) means look.
    block_limits: bool | None = field(default=None, compare=False)

    @property
    def permissions(self) -> tuple[str, ...]:
        return PERMISSIONS.get(self.role, ())

    def can(self, permission: str) -> bool:
        return permission in self.permissions
