"""Prometheus metrics of the engine, counted where the facts are decided (job and step
transitions, provider attempts, budget holds), read by the workers' /metrics.

Transitions are counted when their transaction commits, so a rolled-back change (a lost
compare-and-set, a refused hold) is never counted as done.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Histogram
from sqlalchemy.orm import Session

JOBS = Counter("baton_jobs_total", "Jobs that reached a status", ["kind", "status"])
STEPS = Counter("baton_steps_total", "Steps that reached a status", ["kind", "status"])
PROVIDER_LATENCY = Histogram(
    "baton_provider_call_seconds",
    "One provider attempt, answered or failed",
    ["provider", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
PROVIDER_ERRORS = Counter(
    "baton_provider_errors_total", "Failed provider attempts", ["provider", "error"]
)
BUDGET_HOLDS = Counter(
    "baton_budget_holds_total",
    "Budget holds before a provider call: held, refused (block) or paused (pause)",
    ["outcome"],
)

_PENDING = "baton.metrics.pending"


def count_on_commit(session: Session, counter: Counter, **labels: str) -> None:
    session.info.setdefault(_PENDING, []).append((counter, labels))


@sa.event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    for counter, labels in session.info.pop(_PENDING, []):
        counter.labels(**labels).inc()


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, _transaction: Any) -> None:
    if not session.in_transaction():
        session.info.pop(_PENDING, None)


def provider_attempt(record: dict[str, Any]) -> None:
    """One attempt's history record (workers/providers): its latency and error code."""
    provider, ok = record["provider"], record["status"] == "ok"
    PROVIDER_LATENCY.labels(provider, "ok" if ok else "error").observe(record["latency_ms"] / 1000)
    if not ok:
        PROVIDER_ERRORS.labels(provider, record.get("error_code", "unknown")).inc()


def budget_refused(*, paused: bool) -> None:
    # Counted at once: the refusal rolls its transaction back, so it never commits.
    BUDGET_HOLDS.labels("paused" if paused else "refused").inc()
