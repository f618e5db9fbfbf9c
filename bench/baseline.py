"""The stack's own limits, measured beside Baton in the same run.

- ``baseline_app``: a bare Flask route that inserts one row and sends one Celery task.
- ``noop``: a no-op task for a raw Celery chain of 5.
Run by bench/bench_engine.py; not part of Baton.
"""

from __future__ import annotations

import os
import uuid

import sqlalchemy as sa
from celery import Celery
from flask import Flask, jsonify

celery_app = Celery(
    "bench_baseline",
    broker=os.environ["CELERY_BROKER_URL"],
    backend=os.environ["CELERY_RESULT_BACKEND"],
)
celery_app.conf.update(
    task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1
)


@celery_app.task(name="bench.noop")
def noop() -> None:
    return None


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
