"""Test harness: a fresh PostgreSQL database migrated once per run, a transaction per
test, real Redis, and real Celery worker processes for the end-to-end tests.

Every run gets its own database, queue prefix and rate-limit prefix, so concurrent runs on
one machine never see each other's rows or messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
PG_ADMIN_URL = os.environ.get(
    "BATON_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
TEST_DB = f"baton_test_{RUN_ID}"
REDIS = os.environ.get("BATON_TEST_REDIS", "redis://127.0.0.1:6379")
# The broker under test: Redis by default; CI runs the end-to-end tests a second time with
# BATON_TEST_BROKER=amqp://guest:guest@127.0.0.1:5672// (RabbitMQ).
BROKER = os.environ.get("BATON_TEST_BROKER") or f"{REDIS}/0"

# Set before anything reads settings (the one module that reads the environment).
os.environ.update(
    DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{TEST_DB}",
    CELERY_BROKER_URL=BROKER,
    CELERY_RESULT_BACKEND=f"{REDIS}/1",
    REDIS_URL=f"{REDIS}/2",
    BATON_QUEUE_PREFIX=f"t{RUN_ID}",
    # Breaker state, worker heartbeats and live channels: this run's keys only.
    BATON_REDIS_PREFIX=f"t{RUN_ID}",
    BATON_HOME=tempfile.mkdtemp(prefix="baton-test-"),
    JWT_SECRET_KEY="test-secret-key-that-is-long-enough-for-hs256-0123456789",
    BATON_STEP_TIME_LIMIT="60",
    # Streamed output becomes an event every 64 characters: several per sim answer.
    BATON_STREAM_EVENT_CHARS="64",
    # Integration keys are stored encrypted; a fresh key per run.
    BATON_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    # Local fake servers (providers, webhook receivers, GitHub) listen on 127.0.0.1: the
    # egress guard allows that literal host only (localhost, ::1, ... stay refused).
    BATON_ALLOWED_PRIVATE_HOSTS="127.0.0.1",
    # Webhook retries in test time: 0.2 s, 0.4 s, ...
    BATON_WEBHOOK_BACKOFF_SECONDS="0.2",
    BATON_WEBHOOK_TIMEOUT_SECONDS="3",
    BATON_WEBHOOK_MAX_ATTEMPTS="4",
    BATON_WEBHOOK_DISABLE_AFTER_FAILURES="2",
    GITHUB_WEBHOOK_SECRET="test-github-webhook-secret",
)
for _var in ("OPENAI_API_KEY", "GROQ_API_KEY", "BATON_DEFAULT_PROVIDER", "BATON_PROVIDERS"):
    os.environ.pop(_var, None)

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from baton.settings import reset_settings_cache  # noqa: E402

reset_settings_cache()

ROOT = Path(__file__).resolve().parent.parent
QUEUE_PREFIXES = [os.environ["BATON_QUEUE_PREFIX"]]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    from models.migrate import upgrade

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEST_DB}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{TEST_DB}"'))
    url = os.environ["DATABASE_URL"]
    upgrade(url)
    yield url
    from models.db import get_engine

    get_engine.cache_clear()
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": TEST_DB},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{TEST_DB}"'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def _forget_redis_keys() -> Iterator[None]:
    """This run's breaker states and heartbeats go with it."""
    yield
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    keys = list(client.scan_iter(match=f"{os.environ['BATON_REDIS_PREFIX']}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _forget_broker_queues() -> Iterator[None]:
    """On RabbitMQ, queues are durable and outlive the run: delete this run's (the queue
    prefix names them). On Redis a drained queue is an absent key already."""
    yield
    if not BROKER.startswith("amqp"):
        return
    from kombu import Connection

    priorities = ("urgent", "high", "medium", "low")
    with Connection(BROKER, connect_timeout=5) as conn:
        channel = conn.channel()
        for prefix in QUEUE_PREFIXES:
            for name in (f"{prefix}.{p}" for p in priorities):
                channel.queue_delete(name)  # Celery declares a direct exchange per queue too
                channel.exchange_delete(name)


def queue_prefix(name: str) -> str:
    """A queue prefix of this run's own for a test's processes (removed at the end)."""
    QUEUE_PREFIXES.append(f"{name}{RUN_ID}")
    return QUEUE_PREFIXES[-1]


@pytest.fixture(scope="session")
def engine(database_url: str) -> sa.Engine:
    from models.db import get_engine

    return get_engine(database_url)


@pytest.fixture
def sessions(engine: sa.Engine) -> Iterator[sessionmaker]:
    """A session factory inside one outer transaction that is rolled back after the test.

    Commands' commits become savepoint releases, so the test sees its own writes and
    leaves nothing behind.
    """
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield factory
    outer.rollback()
    connection.close()


@pytest.fixture
def db(sessions: sessionmaker):
    with sessions() as session:
        yield session


# The seed dialects' own limits (100 a minute per IP, 50 per user, 10 sign-ins per 15
# minutes...) are the documents' numbers; tests that are not about them make more requests
# than that from one address, so they run with these. tests/compat/test_dialect_rate_limits.py
# puts the documents' back.
ROOMY_DIALECT_LIMITS = {
    name: {kind: "100000 per minute" for kind in ("ip", "user", "organization", "auth")}
    for name in ("vel_tutor", "command_center", "task_assistant", "orchestrator", "phase2")
}


def _make_app(factory: sessionmaker, **config: Any):
    from api import create_app

    return create_app(
        {
            "TESTING": True,
            "SESSION_FACTORY": factory,
            "RATELIMIT_KEY_PREFIX": f"baton-rl-{uuid.uuid4().hex}",
            "BATON_DIALECT_RATE_LIMITS": ROOMY_DIALECT_LIMITS,
            **config,
        }
    )


@pytest.fixture
def app(sessions: sessionmaker):
    return _make_app(sessions)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live_client(database_url: str):
    """An API client whose commits are real, for tests that need worker processes."""
    from models.db import session_factory

    return _make_app(session_factory(database_url)).test_client()


class WorkerPool:
    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, count: int = 1, concurrency: int = 2) -> None:
        from orchestration.canvas import all_queues

        log_dir = Path(os.environ["BATON_HOME"]) / "worker-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            index = len(self.processes)
            log_path = log_dir / f"worker-{index}.log"
            self.logs.append(log_path)
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "workers", "worker",
                    "-Q", ",".join(all_queues()), "-c", str(concurrency), "-P", "prefork",
                    "-n", f"w{index}-{RUN_ID}@%h", "--without-gossip", "--without-mingle",
                    "-l", "info", "-f", str(log_path),
                ],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            self.processes.append(proc)
        deadline = time.monotonic() + 60
        for proc, log_path in zip(self.processes, self.logs, strict=True):
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {log_path.read_text()[-3000:]}")
                if log_path.exists() and " ready." in log_path.read_text():
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"worker not ready: {log_path.read_text()[-3000:]}")

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in self.logs if p.exists())

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes.clear()


@pytest.fixture
def fake_openai() -> Iterator[Any]:
    """Start local OpenAI-compatible servers (tests/fake_openai.py); closed after the test."""
    from tests.fake_openai import FakeOpenAI

    servers: list[FakeOpenAI] = []

    def start(script: list[tuple[Any, ...]]) -> FakeOpenAI:
        servers.append(FakeOpenAI(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def scripts(tmp_path: Path) -> Iterator[Any]:
    """Start `baton ...` console scripts (production commands); stopped after the test."""
    from tests.processes import Script

    started: list[Script] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Script:
        started.append(Script(args, log, env))
        return started[-1]

    yield start
    for script in started:
        script.stop()


@pytest.fixture(scope="session")
def workers(database_url: str) -> Iterator[WorkerPool]:
    """Two real Celery worker processes (prefork, two children each) on real Redis."""
    pool = WorkerPool()
    pool.start(count=2, concurrency=2)
    yield pool
    pool.stop()
