"""What every built-in tool shares: its error type and the context it runs in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker


class ToolError(Exception):
    """A tool refused or failed; the message is what the model is told."""


@dataclass(frozen=True)
class ToolContext:
    sessions: sessionmaker[Session]
    organization_id: uuid.UUID
    job_id: uuid.UUID
    timeout_seconds: float
