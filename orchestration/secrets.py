"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with keys from BATON_ENCRYPTION_KEY.

BATON_ENCRYPTION_KEY holds one Fernet key (``Fernet.generate_key()``), or several separated
by commas for rotation: the first encrypts, every one of them decrypts.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from baton.settings import get_settings
from orchestration.errors import field_error


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys can decrypt."""


@lru_cache(maxsize=4)
def _fernet(raw: str) -> MultiFernet | None:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        return None
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError):
        return None


def encrypt(plaintext: str, *, field_name: str = "api_key") -> str:
    """Refuses (422 on ``field_name``) when no usable encryption key is configured."""
    raw = get_settings().encryption_key
    fernet = _fernet(raw)
    if fernet is None:
        problem = (
            "BATON_ENCRYPTION_KEY is not a valid Fernet key"
            if raw.strip()
            else "BATON_ENCRYPTION_KEY is not configured"
        )
        raise field_error(field_name, f"cannot store a secret: {problem}")
    return fernet.encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    fernet = _fernet(get_settings().encryption_key)
    if fernet is None:
        raise SecretUnreadable("BATON_ENCRYPTION_KEY is not configured")
    try:
        return fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no configured BATON_ENCRYPTION_KEY decrypts it") from None
