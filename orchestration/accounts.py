"""Accounts: registration, sign-in, refresh-token rotation, logout, users, organizations.

Free of Flask: the API passes a ``TokenIssuer`` that mints the JWT pair, so this module
only decides *whether* to issue and records what was issued (refresh rows, revocations).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    BudgetLimit,
    LimitAction,
    Organization,
    RefreshToken,
    RevokedAccessToken,
    Role,
    User,
    utcnow,
)
from models.db import autocommit_engine, execute_autocommit, transaction
from orchestration import integrations, quotas
from orchestration.errors import (
    AuthenticationRequired,
    Conflict,
    ValidationFailed,
    field_error,
)
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.principal import Principal

INVALID_CREDENTIALS = "Invalid credentials"
INVALID_REFRESH = "The refresh token is invalid, expired or revoked"

_hasher = PasswordHasher()


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    refresh_jti: str
    refresh_expires_at: datetime
    expires_in: int  # seconds until the access token expires


# (user, refresh-token family id) -> a freshly minted pair. Pure: no database access.
TokenIssuer = Callable[[User, uuid.UUID], TokenPair]


@dataclass(frozen=True)
class SignIn:
    user: User
    tokens: TokenPair


@dataclass(frozen=True)
class SecondFactorRequired:
    """The password was right; the sign-in ends at POST /auth/2fa/verify (or, with
    ``setup``, once the user enables 2FA, which their organization requires)."""

    user: User
    setup: bool


@dataclass(frozen=True)
class Registration:
    email: str
    password: str
    organization_name: str
    full_name: str | None = None
    username: str | None = None


@dataclass(frozen=True)
class NewUser:
    email: str
    password: str
    role: str = Role.MEMBER.value
    full_name: str | None = None
    username: str | None = None


# -- passwords ---------------------------------------------------------------------------


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("baton-dummy-password-for-timing")


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def normalize_email(email: str) -> str:
    return email.strip().lower()


# -- helpers (session in, never commit) ---------------------------------------------------


def _check_unique(
    session: Session, *, email: str | None, username: str | None, exclude: uuid.UUID | None
) -> None:
    """A readable 409 with the field; the unique indexes still catch races (see _flush)."""
    checks = (("email", User.email, email), ("username", User.username, username))
    for field_name, column, value in checks:
        if value is None:
            continue
        stmt = sa.select(User.id).where(column == value)
        if exclude is not None:
            stmt = stmt.where(User.id != exclude)
        if session.scalar(stmt.limit(1)) is not None:
            raise Conflict(
                f"A user with this {field_name} already exists",
                [{"field": field_name, "message": "already in use"}],
            )


def _flush(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict("A user with this email or username already exists") from exc


def _unique_slug(session: Session, name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:200] or "org"
    slug = base
    while session.scalar(sa.select(Organization.id).where(Organization.slug == slug)):
        slug = f"{base}-{uuid.uuid4().hex[:6]}"
    return slug


def _start_session(
    session: Session, user: User, issue: TokenIssuer, family_id: uuid.UUID
) -> SignIn:
    tokens = issue(user, family_id)
    session.add(
        RefreshToken(
            jti=tokens.refresh_jti,
            user_id=user.id,
            family_id=family_id,
            expires_at=tokens.refresh_expires_at,
        )
    )
    return SignIn(user=user, tokens=tokens)


def start_session(session: Session, user: User, issue: TokenIssuer) -> SignIn:
    """A new login (refresh family) for ``user``; the caller owns the transaction."""
    return _start_session(session, user, issue, uuid.uuid4())


def _revoke_family(session: Session, family_id: uuid.UUID) -> None:
    session.execute(
        sa.update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _current_user(session: Session, principal: Principal) -> User:
    user = session.get(User, principal.user_id)
    if user is None or user.organization_id != principal.organization_id or not user.is_active:
        # The token outlived its user: treat it like any other invalid token.
        raise AuthenticationRequired("The user behind this token no longer exists")
    return user


def users_by_id(session: Session, *, ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, User]:
    """Creators for a page of rows in one query (no relationships on the models)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {u.id: u for u in session.scalars(sa.select(User).where(User.id.in_(wanted)))}


# -- authentication commands ---------------------------------------------------------------


def register(
    sessions: sessionmaker[Session], *, registration: Registration, issue: TokenIssuer
) -> SignIn:
    """A new organization and its first user, an admin, signed in."""
    email = normalize_email(registration.email)
    with transaction(sessions) as session:
        _check_unique(session, email=email, username=registration.username, exclude=None)
        org = Organization(
            name=registration.organization_name,
            slug=_unique_slug(session, registration.organization_name),
            settings={},
            api_quota_limit=get_settings().default_api_quota,
        )
        session.add(org)
        session.flush()
        user = User(
            organization_id=org.id,
            email=email,
            username=registration.username,
            full_name=registration.full_name,
            password_hash=hash_password(registration.password),
            role=Role.ADMIN.value,
        )
        session.add(user)
        _flush(session)
        signin = _start_session(session, user, issue, uuid.uuid4())
    return signin


def login(
    sessions: sessionmaker[Session],
    *,
    password: str,
    issue: TokenIssuer,
    email: str | None = None,
    username: str | None = None,
) -> SignIn | SecondFactorRequired:
    """Email or username + password. One message for every failure, so no user enumeration.

    A user with 2FA on, or without it in an organization that requires it, gets
    ``SecondFactorRequired`` instead of tokens."""
    with transaction(sessions) as session:
        if email:
            user = session.scalar(sa.select(User).where(User.email == normalize_email(email)))
        elif username:
            # Seed 001 clients send an email in the username field too.
            user = session.scalar(
                sa.select(User).where(
                    sa.or_(User.username == username, User.email == normalize_email(username))
                )
            )
        else:
            user = None
        if user is None:
            _verify(_dummy_hash(), password)  # same work as a real check: no timing oracle
            raise AuthenticationRequired(INVALID_CREDENTIALS)
        if not _verify(user.password_hash, password) or not user.is_active:
            raise AuthenticationRequired(INVALID_CREDENTIALS)
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        if user.totp_enabled_at is not None:
            return SecondFactorRequired(user, setup=False)
        if _requires_2fa_setup(session, user):
            return SecondFactorRequired(user, setup=True)
        return _start_session(session, user, issue, uuid.uuid4())


def _requires_2fa_setup(session: Session, user: User) -> bool:
    if user.totp_enabled_at is not None:
        return False
    org = session.get(Organization, user.organization_id)
    return bool(org is not None and org.require_2fa)


def refresh(sessions: sessionmaker[Session], *, jti: str, issue: TokenIssuer) -> SignIn:
    """Rotate: the presented token is spent and a new pair of the same family is issued.

    Presenting a spent (or revoked) token again means it was copied: the whole family is
    revoked, which also logs out whoever holds the newest token of that family.
    """
    reused = False
    with transaction(sessions) as session:
        row = session.get(RefreshToken, jti, with_for_update=True)
        if row is not None and (row.replaced_by is not None or row.revoked_at is not None):
            _revoke_family(session, row.family_id)
            reused = True
        elif row is not None and row.expires_at > utcnow():
            user = session.get(User, row.user_id)
            if user is not None and user.is_active and not _requires_2fa_setup(session, user):
                # Role changes made since login take effect here: claims come from the row.
                # A login without 2FA in an organization that now requires it is not
                # renewed: the user signs in again and sets it up.
                signin = _start_session(session, user, issue, row.family_id)
                row.replaced_by = signin.tokens.refresh_jti
                return signin
    # Raised after the commit above, so the family revocation is kept.
    if reused:
        raise AuthenticationRequired(
            "This refresh token was already used; all sessions of this login were revoked"
        )
    raise AuthenticationRequired(INVALID_REFRESH)


def reissue(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    family_id: uuid.UUID,
    issue: TokenIssuer,
) -> SignIn:
    """A new access token in the caller's live login (``family_id``), for a client that
    refreshes with its access token (seed 002's ``POST /auth/refresh``). The login's
    refresh tokens are untouched: logout or a reused refresh token still ends it all."""
    with sessions() as session:
        user = _current_user(session, principal)
        if _requires_2fa_setup(session, user):
            raise AuthenticationRequired("Sign in again: your organization requires 2FA")
        return SignIn(user=user, tokens=issue(user, family_id))


def logout(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    access_jti: str,
    access_expires_at: datetime,
    refresh_jti: str | None = None,
) -> None:
    with transaction(sessions) as session:
        if session.get(RevokedAccessToken, access_jti) is None:
            session.add(RevokedAccessToken(jti=access_jti, expires_at=access_expires_at))
        if refresh_jti:
            row = session.get(RefreshToken, refresh_jti)
            # Only the caller's own login can be ended this way.
            if row is not None and row.user_id == principal.user_id:
                _revoke_family(session, row.family_id)


@dataclass(frozen=True)
class LiveSession:
    """What one query says about an access token's user and login, right now."""

    organization_id: uuid.UUID
    role: str
    api_quota_limit: int | None
    # Whether the organization has an active, undeleted ``block`` budget limit (of any
    # scope): without one, a submission needs no budget read to know it is not a 402.
    has_block_limits: bool = True


@lru_cache(maxsize=1)
def _live_session_statement() -> sa.Select[Any]:
    """Built once (its parameters are bound per call): the user row, both revocation
    checks, the organization's quota and whether it has a block limit, in one SELECT."""
    token_revoked = sa.select(RevokedAccessToken.jti).where(
        RevokedAccessToken.jti == sa.bindparam("jti")
    )
    family_revoked = sa.select(RefreshToken.jti).where(
        RefreshToken.family_id == sa.bindparam("family_id", type_=sa.Uuid()),
        RefreshToken.revoked_at.is_not(None),
    )
    block_limit = sa.select(BudgetLimit.id).where(
        BudgetLimit.organization_id == User.organization_id,
        BudgetLimit.action_on_exceed == LimitAction.BLOCK.value,
        BudgetLimit.is_active.is_(True),
        BudgetLimit.deleted_at.is_(None),
    )
    return (
        sa.select(
            User.organization_id,
            User.role,
            token_revoked.exists(),
            family_revoked.exists(),
            Organization.api_quota_limit,
            block_limit.exists(),
        )
        .join(Organization, Organization.id == User.organization_id)
        .where(User.id == sa.bindparam("user_id", type_=sa.Uuid()), User.is_active.is_(True))
    )


def live_session(
    sessions: sessionmaker[Session], *, user_id: uuid.UUID, jti: str, family_id: uuid.UUID
) -> LiveSession | None:
    """The caller's organization and current role, or None when the token must be refused:
    the user is gone or deactivated, the token was logged out, or its login (refresh
    family) was revoked by logout, refresh-token reuse or a password change.

    One round trip per request: the user row and both revocation checks in one SELECT,
    outside a transaction when the factory is bound to an engine (one statement reads
    one snapshot anyway; a BEGIN and a ROLLBACK were two more round trips).
    """
    stmt = _live_session_statement()
    params = {"user_id": user_id, "jti": jti, "family_id": family_id}
    bind = sessions.kw.get("bind")
    if (engine := autocommit_engine(sessions)) is not None:
        row = _live_session_row(engine, params)
    elif isinstance(bind, sa.Engine):
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = conn.execute(stmt, params).one_or_none()
    else:  # bound to a connection (a test's outer transaction): read through it
        with sessions() as session:
            row = session.execute(stmt, params).one_or_none()
    if row is None or row[2] or row[3]:
        return None
    organization_id = row[0]
    if not isinstance(organization_id, uuid.UUID):  # the raw driver's text
        organization_id = uuid.UUID(organization_id)
    return LiveSession(
        organization_id=organization_id,
        role=row[1],
        api_quota_limit=row[4],
        has_block_limits=row[5],
    )


@lru_cache(maxsize=4)
def _live_session_sql(dialect: sa.Dialect) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The statement's text for the driver, and its constant parameters (the limit action)."""
    compiled = _live_session_statement().compile(dialect=dialect)
    return str(compiled), tuple(compiled.params.items())


def _live_session_row(bind: sa.Engine, params: dict[str, Any]) -> Any:
    """The token check's SELECT on a pooled driver connection in autocommit (no BEGIN, no
    ROLLBACK), without a SQLAlchemy ``Connection``: its setup, statement cache lookup,
    execution context and result were two thirds of the check's CPU, every request
    (``models.db.execute_autocommit``)."""
    sql, constants = _live_session_sql(bind.dialect)
    values = dict(constants)
    values.update(
        user_id=str(params["user_id"]), jti=params["jti"], family_id=str(params["family_id"])
    )
    return execute_autocommit(bind, sql, values)


def purge_revoked_access_tokens(sessions: sessionmaker[Session]) -> int:
    """Forget logged-out access tokens (and spent 2FA temp tokens) past their expiry: an
    expired token is refused anyway. Refresh rows stay: they carry the family state."""
    with transaction(sessions) as session:
        result = session.execute(
            sa.delete(RevokedAccessToken).where(RevokedAccessToken.expires_at <= utcnow())
        )
        return result.rowcount or 0


# -- users ---------------------------------------------------------------------------------


def get_current_user(sessions: sessionmaker[Session], *, principal: Principal) -> User:
    with sessions() as session:
        return _current_user(session, principal)


def update_current_user(
    sessions: sessionmaker[Session], *, principal: Principal, changes: dict[str, Any]
) -> User:
    """``changes``: any of email, password, full_name, username (role is admin business).

    A password change revokes all of the user's refresh tokens.
    """
    with transaction(sessions) as session:
        user = _current_user(session, principal)
        email = normalize_email(changes["email"]) if changes.get("email") else None
        _check_unique(session, email=email, username=changes.get("username"), exclude=user.id)
        if email:
            user.email = email
        if "username" in changes:
            user.username = changes["username"]
        if "full_name" in changes:
            user.full_name = changes["full_name"]
        if changes.get("password"):
            user.password_hash = hash_password(changes["password"])
            # A new password ends every login, this one included: their refresh and access
            # tokens are refused from the next request (the caller signs in again).
            session.execute(
                sa.update(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        user.updated_at = utcnow()
        _flush(session)
        return user


def create_user(
    sessions: sessionmaker[Session], *, principal: Principal, new_user: NewUser
) -> User:
    """An admin adds a user to their own organization."""
    email = normalize_email(new_user.email)
    with transaction(sessions) as session:
        _check_unique(session, email=email, username=new_user.username, exclude=None)
        user = User(
            organization_id=principal.organization_id,
            email=email,
            username=new_user.username,
            full_name=new_user.full_name,
            password_hash=hash_password(new_user.password),
            role=new_user.role,
        )
        session.add(user)
        _flush(session)
        return user


USER_SORTS = {
    "email": User.email,
    "username": User.username,
    "role": User.role,
    "created_at": User.created_at,
}


def list_users(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    role: str | None,
    page: PageRequest,
) -> Page[User]:
    stmt = sa.select(User).where(User.organization_id == principal.organization_id)
    if role:
        stmt = stmt.where(User.role == role)
    stmt = apply_sort(stmt, page.sort, USER_SORTS, User.created_at.asc()).order_by(User.id)
    with sessions() as session:
        return paginate(session, stmt, page)


# -- organizations -------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganizationState:
    """The organization row and this month's API calls (seed 003 ``api_quota_used``)."""

    organization: Organization
    api_quota_used: int


def get_organization(sessions: sessionmaker[Session], *, principal: Principal) -> OrganizationState:
    with sessions() as session:
        org = session.get(Organization, principal.organization_id)
        if org is None:
            raise AuthenticationRequired("The organization behind this token no longer exists")
    return OrganizationState(org, quotas.used(org.id))


def subscription_tier(sessions: sessionmaker[Session], *, organization_id: uuid.UUID) -> str:
    """The organization's subscription tier (seed 003's rate-limit tiers), ``free`` if gone."""
    with sessions() as session:
        tier = session.scalar(
            sa.select(Organization.subscription_tier).where(Organization.id == organization_id)
        )
    return tier or "free"


def _validate_org_settings(session: Session, org_id: uuid.UUID, settings: dict[str, Any]) -> None:
    model = settings.get("default_ai_model")
    if model is None:
        return
    if not isinstance(model, str) or not model:
        raise field_error("settings.default_ai_model", "must be a model name")
    catalog = integrations.catalog_for(session, organization_id=org_id)
    try:
        catalog.price_for(catalog.resolve(model))
    except ValidationFailed as exc:
        message = exc.details[0]["message"] if exc.details else exc.message
        raise field_error("settings.default_ai_model", message) from exc


def update_organization(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    require_2fa: bool | None = None,
) -> OrganizationState:
    """``settings`` is merged key by key; a key set to null is removed."""
    with transaction(sessions) as session:
        if settings:
            _validate_org_settings(session, principal.organization_id, settings)
        org = session.get(Organization, principal.organization_id, with_for_update=True)
        if org is None:
            raise AuthenticationRequired("The organization behind this token no longer exists")
        if name is not None:
            org.name = name
        if settings is not None:
            merged = {**(org.settings or {}), **settings}
            org.settings = {k: v for k, v in merged.items() if v is not None}
        if require_2fa is not None:
            org.require_2fa = require_2fa
        org.updated_at = utcnow()
    return OrganizationState(org, quotas.used(org.id))
