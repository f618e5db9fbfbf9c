"""Two-factor sign-in (seeds 001, 003): TOTP (RFC 6238, pyotp) and recovery codes.

The TOTP secret is stored Fernet-encrypted (orchestration/secrets, BATON_ENCRYPTION_KEY),
recovery codes argon2-hashed and shown once. A TOTP code is accepted one step either side
of now, and only for a time step later than the last one accepted (a code works once).
Free of Flask: the API mints the short-lived ``temp_token`` and passes its claims in.
"""

from __future__ import annotations

import hmac
import secrets as std_secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session, sessionmaker

from models import Organization, RecoveryCode, RevokedAccessToken, User, utcnow
from models.db import transaction
from orchestration import accounts, secrets
from orchestration.errors import AuthenticationRequired, Conflict, Forbidden, field_error

ISSUER = "Baton"
# Recovery codes are random (40 bits): OWASP's minimum argon2id profile (19 MiB, t=2) is
# enough against offline guessing and keeps hashing ten of them quick.
_recovery_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
RECOVERY_CODE_COUNT = 10
INVALID_CODE = "The code is not valid"


@dataclass(frozen=True)
class Setup:
    secret: str
    provisioning_uri: str


@dataclass(frozen=True)
class Enabled:
    recovery_codes: list[str]  # the only time they are shown
    signin: accounts.SignIn | None  # when enabling completed a sign-in (temp_token)


def _user(session: Session, user_id: uuid.UUID, *, lock: bool = False) -> User:
    user = session.get(User, user_id, with_for_update=lock)
    if user is None or not user.is_active:
        raise AuthenticationRequired("The user behind this token no longer exists")
    return user


def _totp(user: User) -> pyotp.TOTP:
    try:
        return pyotp.TOTP(secrets.decrypt(user.totp_secret_encrypted or ""))
    except secrets.SecretUnreadable as exc:
        raise Conflict(
            "The stored 2FA secret cannot be read (BATON_ENCRYPTION_KEY changed); "
            "use a recovery code or ask an administrator"
        ) from exc


def _accept_totp(user: User, code: str, now: datetime) -> bool:
    """A code of the step before, of or after now, later than the last one accepted."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6) or not user.totp_secret_encrypted:
        return False
    totp = _totp(user)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return False  # already used
            user.totp_last_step = step
            return True
    return False


def _normalize_recovery(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def _verify_recovery(code_hash: str, code: str) -> bool:
    try:
        return _recovery_hasher.verify(code_hash, code)
    except (VerificationError, InvalidHashError):
        return False


def _accept_recovery_code(session: Session, user: User, code: str) -> bool:
    wanted = _normalize_recovery(code)
    if not wanted or len(wanted) > 64:
        return False
    unused = session.scalars(
        sa.select(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .with_for_update()
    )
    for row in unused:
        if _verify_recovery(row.code_hash, wanted):
            row.used_at = utcnow()
            return True
    return False


def _check_factor(
    session: Session, user: User, *, code: str | None, recovery_code: str | None
) -> None:
    if code is None and recovery_code is None:
        raise field_error("code", "a TOTP code or a recovery_code is required")
    ok = (
        _accept_totp(user, code, datetime.now(UTC))
        if code is not None
        else _accept_recovery_code(session, user, recovery_code or "")
    )
    if not ok:
        raise AuthenticationRequired(INVALID_CODE)


def _new_recovery_codes(session: Session, user: User) -> list[str]:
    session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [std_secrets.token_hex(5) for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(
        RecoveryCode(user_id=user.id, code_hash=_recovery_hasher.hash(c)) for c in codes
    )
    return [f"{c[:5]}-{c[5:]}" for c in codes]


def _spend_temp_token(session: Session, jti: str, expires_at: datetime) -> None:
    """A temp_token completes one sign-in only."""
    if session.get(RevokedAccessToken, jti) is not None:
        raise AuthenticationRequired("The temp_token was already used; sign in again")
    session.add(RevokedAccessToken(jti=jti, expires_at=expires_at))


# -- commands ------------------------------------------------------------------------------


def start_setup(sessions: sessionmaker[Session], *, user_id: uuid.UUID) -> Setup:
    """A new secret, pending until ``enable`` confirms a code from it."""
    with transaction(sessions) as session:
        user = _user(session, user_id, lock=True)
        if user.totp_enabled_at is not None:
            raise Conflict("Two-factor sign-in is already on; disable it first")
        secret = pyotp.random_base32()
        user.totp_secret_encrypted = secrets.encrypt(secret, field_name="secret")
        user.totp_last_step = None
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return Setup(secret=secret, provisioning_uri=uri)


def enable(
    sessions: sessionmaker[Session],
    *,
    user_id: uuid.UUID,
    code: str,
    issue: accounts.TokenIssuer | None = None,
    temp_token: tuple[str, datetime] | None = None,
) -> Enabled:
    """Confirm the pending secret with a code; answers the recovery codes (once).

    With ``temp_token`` (jti, expiry) and ``issue``: the sign-in that required setup is
    completed in the same transaction.
    """
    with transaction(sessions) as session:
        user = _user(session, user_id, lock=True)
        if user.totp_enabled_at is not None:
            raise Conflict("Two-factor sign-in is already on")
        if not user.totp_secret_encrypted:
            raise Conflict("Start with POST /auth/2fa/setup")
        if not _accept_totp(user, code, datetime.now(UTC)):
            raise field_error("code", INVALID_CODE)
        user.totp_enabled_at = utcnow()
        codes = _new_recovery_codes(session, user)
        signin = None
        if temp_token is not None and issue is not None:
            _spend_temp_token(session, *temp_token)
            signin = accounts.start_session(session, user, issue)
    return Enabled(recovery_codes=codes, signin=signin)


def verify_login(
    sessions: sessionmaker[Session],
    *,
    user_id: uuid.UUID,
    temp_token: tuple[str, datetime],
    issue: accounts.TokenIssuer,
    code: str | None = None,
    recovery_code: str | None = None,
) -> accounts.SignIn:
    """The second step of a sign-in: the password was right, now the code."""
    with transaction(sessions) as session:
        user = _user(session, user_id, lock=True)
        if user.totp_enabled_at is None:
            raise AuthenticationRequired(
                "Two-factor sign-in is not set up: use POST /auth/2fa/setup with the temp_token"
            )
        if session.get(RevokedAccessToken, temp_token[0]) is not None:
            raise AuthenticationRequired("The temp_token was already used; sign in again")
        _check_factor(session, user, code=code, recovery_code=recovery_code)
        _spend_temp_token(session, *temp_token)
        return accounts.start_session(session, user, issue)


def disable(
    sessions: sessionmaker[Session],
    *,
    user_id: uuid.UUID,
    code: str | None = None,
    recovery_code: str | None = None,
) -> None:
    with transaction(sessions) as session:
        user = _user(session, user_id, lock=True)
        if user.totp_enabled_at is None:
            raise Conflict("Two-factor sign-in is not on")
        org = session.get(Organization, user.organization_id)
        if org is not None and org.require_2fa:
            raise Forbidden("Your organization requires two-factor sign-in")
        _check_factor(session, user, code=code, recovery_code=recovery_code)
        user.totp_secret_encrypted = None
        user.totp_enabled_at = None
        user.totp_last_step = None
        session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
