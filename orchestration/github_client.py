"""The one client Baton calls GitHub through (seed 001's pull request actions).

Authenticates as the project's GitHub App: a short-lived app JWT (RS256, PyJWT, signed with
GITHUB_APP_PRIVATE_KEY) is exchanged for an installation token, cached until shortly
before it expires. The base URL is GITHUB_API_URL (GitHub Enterprise, or a local fake in
tests). Any failure is a GitHubApiError (``GITHUB_API_ERROR``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import jwt

from baton.settings import get_settings
from orchestration.errors import GitHubApiError

_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class AppInstallation:
    app_id: str
    installation_id: str


class GitHubClient:
    def __init__(self, installation: AppInstallation) -> None:
        settings = get_settings()
        self.base_url = settings.github_api_url
        self.installation = installation
        self._private_key = settings.github_app_private_key
        self._timeout = settings.github_timeout_seconds
        if not self._private_key:
            raise GitHubApiError("GITHUB_APP_PRIVATE_KEY is not configured")

    def app_jwt(self) -> str:
        now = int(time.time())
        # iat 60 s in the past absorbs clock drift (GitHub's advice); at most 10 minutes.
        claims = {"iat": now - 60, "exp": now + 540, "iss": self.installation.app_id}
        try:
            return jwt.encode(claims, self._private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise GitHubApiError(f"GITHUB_APP_PRIVATE_KEY is unusable: {exc}") from None

    def _installation_token(self) -> str:
        key = (self.base_url, self.installation.app_id, self.installation.installation_id)
        with _lock:
            cached = _tokens.get(key)
        if cached and cached[1] > time.time() + 60:
            return cached[0]
        path = f"/app/installations/{self.installation.installation_id}/access_tokens"
        body = self._send("POST", path, auth=f"Bearer {self.app_jwt()}")
        token = body.get("token") if isinstance(body, dict) else None
        if not token:
            raise GitHubApiError("GitHub returned no installation token")
        expires = body.get("expires_at")
        try:
            expiry = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except (AttributeError, ValueError):
            expiry = time.time() + 300
        with _lock:
            _tokens[key] = (token, expiry)
        return token

    def _send(self, method: str, path: str, *, auth: str, json: Any = None) -> Any:
        headers = {
            "Authorization": auth,
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "Baton",
        }
        try:
            with httpx.Client(timeout=self._timeout, follow_redirects=False) as client:
                response = client.request(method, self.base_url + path, headers=headers, json=json)
        except httpx.HTTPError as exc:
            raise GitHubApiError(
                f"GitHub did not answer {method} {path}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 300:
            message = _message(response)
            raise GitHubApiError(
                f"GitHub answered {response.status_code} to {method} {path}: {message}",
                {"status_code": response.status_code, "github_message": message},
            )
        return response.json() if response.content else {}

    def request(self, method: str, path: str, json: Any = None) -> Any:
        return self._send(method, path, auth=f"Bearer {self._installation_token()}", json=json)

    # -- pull requests --------------------------------------------------------------

    def review(self, repo: str, number: int, event: str, body: str | None = None) -> Any:
        payload = {"event": event, **({"body": body} if body else {})}
        return self.request("POST", f"/repos/{repo}/pulls/{number}/reviews", payload)

    def merge(self, repo: str, number: int) -> bool:
        """True when merged; False when GitHub refuses (checks failing, not mergeable)."""
        try:
            self.request("PUT", f"/repos/{repo}/pulls/{number}/merge", {"merge_method": "merge"})
        except GitHubApiError as exc:
            if (exc.details or {}).get("status_code") in (405, 409):
                return False
            raise
        return True


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:300]
    except ValueError:
        return response.text[:300]


def reset_tokens() -> None:
    with _lock:
        _tokens.clear()
