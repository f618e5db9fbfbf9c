"""SQLAlchemy 2.0 models; Alembic migrations live in models/migrations."""

from models.base import Base, utcnow
from models.budget import (
    BudgetLimit,
    BudgetReservation,
    BudgetWindow,
    LimitAction,
    Notification,
    NotificationRead,
    Period,
    ScopeType,
)
from models.catalog import Agent, Project, Template
from models.conversations import (
    Conversation,
    ConversationMessage,
    ConversationStatus,
    MessageStatus,
)
from models.github import GitHubDelivery, ProjectIssue, ProjectPullRequest, ProjectTask
from models.idempotency import IdempotencyKey
from models.identity import (
    Organization,
    RecoveryCode,
    RefreshToken,
    RevokedAccessToken,
    Role,
    User,
)
from models.integrations import Integration
from models.jobs import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Job,
    JobEvent,
    JobKind,
    JobPhase,
    JobStatus,
    JobStep,
    Priority,
    StepStatus,
    UsageRecord,
)
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookSubscription

__all__ = [
    "Conversation",
    "ConversationMessage",
    "ConversationStatus",
    "MessageStatus",
    "BudgetLimit",
    "BudgetReservation",
    "BudgetWindow",
    "LimitAction",
    "Notification",
    "NotificationRead",
    "Period",
    "ScopeType",
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "Agent",
    "Base",
    "Job",
    "IdempotencyKey",
    "Integration",
    "JobEvent",
    "JobKind",
    "JobPhase",
    "JobStatus",
    "JobStep",
    "Organization",
    "Priority",
    "Project",
    "RecoveryCode",
    "RefreshToken",
    "RevokedAccessToken",
    "Role",
    "StepStatus",
    "Template",
    "UsageRecord",
    "User",
    "utcnow",
    "GitHubDelivery",
    "ProjectIssue",
    "ProjectPullRequest",
    "ProjectTask",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
]
