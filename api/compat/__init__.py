"""Seed dialects (issue 15): each seed document served exactly as written at its own
base URL, as thin adapters over the canonical orchestration functions.

One package per dialect (``api.compat.<name>``) exposing ``DIALECT`` (a
``api.compat.core.Dialect``) and a ``routes`` module whose views use
``DIALECT.blueprint``. Keep this module light: ``api.errors`` imports ``registry``.
"""

from __future__ import annotations

import importlib
from typing import Any

DIALECT_PACKAGES = (
    "api.compat.phase2",  # seed 004
    "api.compat.vel_tutor",  # seed 000
    "api.compat.command_center",  # seed 001
    "api.compat.task_assistant",  # seed 002
    "api.compat.orchestrator",  # seed 003
)


def install(api: Any) -> None:
    """Register every dialect's blueprint(s), error schema and prefixes on ``api``."""
    for package_name in DIALECT_PACKAGES:
        package = importlib.import_module(package_name)
        importlib.import_module(f"{package_name}.routes")
        package.DIALECT.install(api)
