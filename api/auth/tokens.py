"""The JWT claims contract: sub = user id, org, role, permissions."""

from __future__ import annotations

from flask_jwt_extended import create_access_token, create_refresh_token

from orchestration.principal import PERMISSIONS


def access_token_for(*, user_id: str, organization_id: str, role: str) -> str:
    return create_access_token(
        identity=user_id,
        additional_claims={
            "org": organization_id,
            "role": role,
            "permissions": list(PERMISSIONS.get(role, ())),
        },
    )


def refresh_token_for(*, user_id: str, organization_id: str, role: str, family: str) -> str:
    return create_refresh_token(
        identity=user_id, additional_claims={"org": organization_id, "role": role, "fam": family}
    )
