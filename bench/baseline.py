"""The stack's own limits, measured beside Baton in the same run.

- ``baseline_app``: a bare Flask route that inserts one row and sends one Celery task.
- ``noop``: a no-op task for a raw Celery chain of 5.
- ``celery_worker``: one worker process (Baton's or this module's), as every bench starts it;
  ``stop_processes`` stops what a bench started.
- ``bench_principal`` and ``bench_limit``: the rows a bench works on, written directly.
Run by the benches in bench/; not part of Baton.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from celery import Celery
from flask import Flask, jsonify

# The URLs are read when a Celery bench imports this; the budget benches use no broker.
celery_app = Celery(
    "bench_baseline",
    broker=os.environ.get("CELERY_BROKER_URL"),
    backend=os.environ.get("CELERY_RESULT_BACKEND"),
)
celery_app.conf.update(
    task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1
)


@celery_app.task(name="bench.noop")
def noop() -> None:
    return None


def celery_worker(
    app: str, queues: Sequence[str], *, concurrency: int = 2, extra: Sequence[str] = ()
) -> subprocess.Popen:
    """``celery -A app worker`` on ``queues`` with the environment of this process (the
    bench sets it before importing this module), its output discarded."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", app, "worker", "-Q", ",".join(queues),
            "-c", str(concurrency), "--without-gossip", "--without-mingle", "-l", "warning",
            *extra,
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_processes(procs: list[subprocess.Popen], timeout: float = 15) -> None:
    """Terminate every process a bench started (all at once), wait for each, kill what does
    not stop in ``timeout`` seconds; ``procs`` is left empty."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    procs.clear()


def bench_principal(sessions, tag: str):  # type: ignore[no-untyped-def]
    """An organization and its admin, written directly (no API): the principal a bench
    submits jobs as (``orchestration.jobs.create_job_rows``)."""
    from models import Organization, User
    from models.db import transaction
    from orchestration.principal import Principal

    with transaction(sessions) as s:
        org = Organization(name=f"Bench {tag}", slug=f"bench-{tag}")
        s.add(org)
        s.flush()
        user = User(
            organization_id=org.id,
            email=f"bench-{tag}@example.com",
            username=f"bench_{tag}",
            password_hash="x",
            role="admin",
        )
        s.add(user)
        s.flush()
        return Principal(user_id=user.id, organization_id=org.id, role="admin")


def bench_limit(sessions) -> tuple[uuid.UUID, uuid.UUID]:  # type: ignore[no-untyped-def]
    """An organization with one hot ``block`` limit (1,000,000 USD a day, never reached)
    and its current window, written directly: what the budget benches reserve and settle
    on. Returns (organization id, window id)."""
    from models import BudgetLimit, Organization
    from models.db import transaction
    from orchestration import budget

    tag = uuid.uuid4().hex[:6]
    with transaction(sessions) as s:
        org = Organization(name=f"Bench {tag}", slug=f"bench-{tag}")
        s.add(org)
        s.flush()
        limit = BudgetLimit(
            organization_id=org.id, name="hot", scope_type="organization", period="daily",
            amount_usd=Decimal("1000000"), action_on_exceed="block",
        )  # fmt: skip
        s.add(limit)
        s.flush()
        return org.id, budget.current_window(s, limit).id


def baseline_app() -> Flask:
    app = Flask(__name__)
    engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=5)
    table = sa.table("bench_rows", sa.column("id", sa.Uuid()), sa.column("payload", sa.Text()))
    queue = os.environ["BENCH_BASELINE_QUEUE"]

    @app.post("/submit")
    def submit():  # type: ignore[no-untyped-def]
        row_id = uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(sa.insert(table).values(id=row_id, payload="x"))
        celery_app.send_task("bench.noop", queue=queue)
        return jsonify({"id": str(row_id)}), 202

    return app
