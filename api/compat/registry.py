"""Which dialect a request speaks: by the blueprint that matched it, else by its path.

Imports nothing from ``api``: the error handlers (``api.errors``) and the OpenAPI pass
(``api.extensions``) read it without an import cycle. ``api.compat.install`` fills it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import has_request_context, request

if TYPE_CHECKING:
    from api.compat.core import Dialect

_BY_BLUEPRINT: dict[str, Dialect] = {}
_BY_TAG: dict[str, Dialect] = {}
_PREFIXES: list[tuple[str, Dialect]] = []


def register(dialect: Dialect, *, blueprint_names: list[str], prefixes: list[str]) -> None:
    for name in blueprint_names:
        _BY_BLUEPRINT[name] = dialect
    _BY_TAG[dialect.tag] = dialect
    for prefix in prefixes:
        if (prefix, dialect) not in _PREFIXES:
            _PREFIXES.append((prefix, dialect))
    # Longest prefix first: /compat/phase2/api/... before a root /api/... prefix.
    _PREFIXES.sort(key=lambda item: len(item[0]), reverse=True)


def for_blueprint(name: str | None) -> Dialect | None:
    return _BY_BLUEPRINT.get(name or "")


def for_path(path: str) -> Dialect | None:
    for prefix, dialect in _PREFIXES:
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return dialect
    return None


def current() -> Dialect | None:
    """The dialect of the request being answered, or None (the canonical API)."""
    if not has_request_context():
        return None
    return for_blueprint(request.blueprint) or for_path(request.path)


def by_tag() -> dict[str, Dialect]:
    return dict(_BY_TAG)


def prefixes() -> list[str]:
    return [prefix for prefix, _ in _PREFIXES]


def all_dialects() -> list[Dialect]:
    return list(_BY_TAG.values())
