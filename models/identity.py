"""Organizations (tenants), users, and the token records behind refresh rotation/logout."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin


class Role(enum.StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    MEMBER = "member"
    VIEWER = "viewer"


class Organization(IdMixin, TimestampMixin, Base):
    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(220), unique=True)
    subscription_tier: Mapped[str] = mapped_column(sa.String(40), default="free")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set by emergency pause-all: no worker starts a provider call for the organization.
    emergency_paused_at: Mapped[datetime | None]


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    username: Mapped[str | None] = mapped_column(sa.String(80), unique=True)
    full_name: Mapped[str | None] = mapped_column(sa.String(200))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(20), default=Role.MEMBER.value)
    is_active: Mapped[bool] = mapped_column(default=True)


class RefreshToken(TimestampMixin, Base):
    """One row per issued refresh token; a family shares one login.

    Presenting a token that was already rotated (``replaced_by`` set) revokes the family:
    that is the signature of a stolen token being replayed.
    """

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    replaced_by: Mapped[str | None] = mapped_column(sa.String(64))


class RevokedAccessToken(Base):
    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
