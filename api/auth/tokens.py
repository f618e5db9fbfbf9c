"""The JWT claims contract: sub = user id, org, role, permissions."""

from __future__ import annotations

from flask_jwt_extended import create_access_token, create_refresh_token

from orchestration.principal import PERMISSIONS


def access_token_for(*, user_id: str, organization_id: str, role: str, family: str) -> str:
    """``fam`` ties the access token to its login: revoking the family ends both."""
    return create_access_token(
        identity=user_id,
        additional_claims={
            "org": organization_id,
            "role": role,
            "permissions": list(PERMISSIONS.get(role, ())),
            "fam": family,
        },
    )


def refresh_token_for(*, user_id: str, organization_id: str, role: str, family: str) -> str:
    return create_refresh_token(
        identity=user_id, additional_claims={"org": organization_id, "role": role, "fam": family}
    )
