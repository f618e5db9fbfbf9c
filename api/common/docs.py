"""The API's docs page (Swagger UI at /api/v1/docs) with its assets served from the
``swagger-ui-bundle`` package: Baton runs on networks without internet, so no CDN."""

from __future__ import annotations

from flask import Blueprint, Flask
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/api/v1/docs/assets/"


def settings() -> dict[str, str]:
    """flask-smorest's Swagger UI page, pointed at the locally served bundle."""
    return {"OPENAPI_SWAGGER_UI_PATH": "docs", "OPENAPI_SWAGGER_UI_URL": ASSETS_URL}


def install(app: Flask) -> None:
    assets = Blueprint(
        "swagger_ui_assets",
        __name__,
        static_folder=str(swagger_ui_path),
        static_url_path=ASSETS_URL.rstrip("/"),
    )
    app.register_blueprint(assets)
