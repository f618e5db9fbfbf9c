"""Domain errors. The API maps each code to its HTTP status and the DESIGN.md envelope."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "INTERNAL_SERVER_ERROR"
    status = 500

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    code, status = "VALIDATION_ERROR", 422


class AuthenticationRequired(DomainError):
    code, status = "AUTHENTICATION_REQUIRED", 401


class Forbidden(DomainError):
    code, status = "FORBIDDEN", 403


class NotFound(DomainError):
    code, status = "RESOURCE_NOT_FOUND", 404


class Conflict(DomainError):
    code, status = "CONFLICT", 409


class BudgetExceeded(DomainError):
    code, status = "BUDGET_EXCEEDED", 402


def field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        "The request contains invalid data", [{"field": field, "message": message}]
    )


class QuotaExceeded(DomainError):
    """Seed 003: the organization's monthly API quota is spent (429, like its rate limits)."""

    code, status = "QUOTA_EXCEEDED", 429

    def __init__(self, message: str, details: Any = None, retry_after: int = 1) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after


# Issue 12: GitHub in and out, the project task board (seed 001's codes).
class MalformedPayload(DomainError):
    code, status = "VALIDATION_ERROR", 400


class AgentBusy(DomainError):
    code, status = "AGENT_BUSY", 409


class GitHubApiError(DomainError):
    code, status = "GITHUB_API_ERROR", 502
