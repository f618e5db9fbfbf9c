"""Benchmark (not a test): webhook deliveries per second to a local receiver, beside a bare
signed POST loop in the same run.

- receiver: a threaded HTTP server in its own process on 127.0.0.1 that answers 204 and
  counts requests;
- bare: this process signs (Standard Webhooks, HMAC-SHA256) and POSTs the same payloads
  with one keep-alive httpx client, one after another, ``--concurrency`` threads;
- baton: N events written to the outbox in one transaction (one subscription), then one
  Celery worker process (``--concurrency`` prefork children) on the webhooks queue delivers
  them: claim, sign, egress check, POST, attempt row, status update each. Timed from the
  commit until every row is ``delivered`` in PostgreSQL.

Needs PostgreSQL and Redis. Usage: ``python bench/bench_webhooks.py [--events 2000]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
RUN = uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_bench_wh_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
ENV = {
    **os.environ,
    "DATABASE_URL": f"{PG}/{DB}",
    "CELERY_BROKER_URL": f"{REDIS}/0",
    "CELERY_RESULT_BACKEND": f"{REDIS}/1",
    "REDIS_URL": f"{REDIS}/2",
    "BATON_QUEUE_PREFIX": f"benchwh{RUN}",
    "BATON_REDIS_PREFIX": f"benchwh{RUN}",
    "BATON_HOME": tempfile.mkdtemp(prefix="baton-bench-"),
    "BATON_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "BATON_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
    "PYTHONPATH": str(ROOT),
}
os.environ.update(ENV)
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-bench!").decode()


def _receive(port_out: multiprocessing.Queue) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.put(server.server_address[1])
    server.serve_forever()


def _bare(url: str, events: int, concurrency: int) -> float:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    local = threading.local()

    def post(index: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=10)
        msg_id = str(uuid.uuid4())
        body = json.dumps(
            {"type": "job.completed", "timestamp": time.time(), "data": {"n": index}},
            separators=(",", ":"),
        ).encode()
        ts = int(time.time())
        sig = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(sig).decode(),
        }
        assert client.post(url, content=body, headers=headers).status_code == 204

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(events)))
    return events / (time.perf_counter() - started)


def _worker(concurrency: int, log: Path) -> subprocess.Popen:
    from orchestration.webhooks import queue_name

    proc = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue_name(),
            "-c", str(concurrency), "-P", "prefork", "--without-gossip", "--without-mingle",
            "-l", os.environ.get("BENCH_LOG_LEVEL", "warning"), "-f", str(log), "-n", f"benchwh{RUN}@%h",
        ],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc


def _baton(url: str, events: int, engine: sa.Engine) -> float:
    from models import Organization, WebhookDelivery, WebhookSubscription
    from models.db import session_factory, transaction
    from orchestration import secrets, webhooks

    sessions = session_factory(ENV["DATABASE_URL"])
    with transaction(sessions) as session:
        org = Organization(name=f"bench-{RUN}", slug=f"bench-{RUN}")
        session.add(org)
        session.flush()
        session.add(
            WebhookSubscription(
                organization_id=org.id,
                url=url,
                event_types=["*"],
                encrypted_secret=secrets.encrypt(SECRET),
                is_active=True,
                consecutive_failures=0,
            )
        )
        session.flush()
        org_id = org.id
    started = time.perf_counter()
    with transaction(sessions) as session:
        for index in range(events):
            webhooks.record_event(
                session, organization_id=org_id, event_type="job.completed", data={"n": index}
            )
    # Commit sent one delivery task per row; wait until PostgreSQL says all delivered.
    count = sa.select(sa.func.count()).where(WebhookDelivery.status == "delivered")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(count).scalar_one() >= events:
                break
        time.sleep(0.05)
    else:
        raise SystemExit("baton did not deliver every event within 10 minutes")
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    create_database(PG, DB)
    ports: multiprocessing.Queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_receive, args=(ports,), daemon=True)
    receiver.start()
    url = f"http://127.0.0.1:{ports.get(timeout=10)}/hook"
    worker = None
    try:
        from models.migrate import upgrade

        upgrade(ENV["DATABASE_URL"])
        engine = sa.create_engine(ENV["DATABASE_URL"])
        log = Path(ENV["BATON_HOME"]) / "worker.log"
        worker = _worker(args.concurrency, log)
        deadline = time.monotonic() + 60
        while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        if worker.poll() is not None:
            raise SystemExit(f"worker exited: {log.read_text()[-2000:]}")

        _bare(url, 200, args.concurrency)  # warm-up
        bare = _bare(url, args.events, args.concurrency)
        baton = _baton(url, args.events, engine)
        print(
            f"events: {args.events}, concurrency: {args.concurrency} (threads / prefork children)"
        )
        print(f"bare signed POST loop : {bare:8.1f} deliveries/s")
        print(f"baton outbox + worker : {baton:8.1f} deliveries/s")
        print(f"ratio baton / bare    : {baton / bare:8.3f}")
        engine.dispose()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        receiver.terminate()
        if os.environ.get("BENCH_KEEP_LOG"):
            print("worker log:", log)
        drop_database(PG, DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
