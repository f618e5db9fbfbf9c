"""Organizations (tenants), users, and the token records behind refresh rotation/logout."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin, utcnow


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
    # Issue 9 (seed 003): API calls allowed per calendar month (UTC); None is unlimited.
    api_quota_limit: Mapped[int | None]
    # Issue 9: every user must sign in with a second factor.
    require_2fa: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


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
    # Issue 9: TOTP secret, Fernet-encrypted (BATON_ENCRYPTION_KEY); set at setup, used
    # for sign-in only once ``totp_enabled_at`` is set (the first code was confirmed).
    totp_secret_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    totp_enabled_at: Mapped[datetime | None]
    # The last TOTP time step accepted: a code works once (no replay within its window).
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)


class RecoveryCode(IdMixin, Base):
    """A single-use 2FA recovery code, argon2-hashed; shown to the user only once."""

    __tablename__ = "recovery_codes"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


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
