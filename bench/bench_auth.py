"""Benchmark (not a test): what an authenticated request costs at Baton's edge.

One process, the Flask app in-process (no network), PostgreSQL and Redis, round after
round in rotating order:
- bare: ``GET /health/live`` (no token, no rate limit): the framework's floor;
- floor: the same request plus one PostgreSQL ``SELECT`` and one Redis round trip, the
  round trips Baton's edge makes (the token's live-session check; the two buckets and
  the quota, one script);
- baton: a viewer's ``POST /projects``, refused with 403 right after the edge: the token
  and session check (one query), the user and organization buckets, and the monthly
  quota (one Lua script), with no view work.
Prints p50/p99 of each and the ratios. Usage: ``python bench/bench_auth.py [--rounds 2000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from scratch import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_bench_auth_{uuid.uuid4().hex[:8]}"
os.environ["DATABASE_URL"] = f"{PG}/{DB}"
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/2")
os.environ["BATON_REDIS_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}"
os.environ.setdefault("BATON_HOME", tempfile.mkdtemp(prefix="baton-bench-"))
# Limits high enough never to refuse: the cost of counting is what is measured.
os.environ["BATON_API_RATE_LIMIT"] = "100000000 per minute"
os.environ["BATON_ORG_RATE_LIMIT"] = "100000000 per minute"


def _pct(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()

    create_database(PG, DB)
    try:
        from api import create_app
        from models.db import get_engine, session_factory, transaction
        from models.migrate import upgrade
        from orchestration.redis_store import redis_client
        from tests import factories

        upgrade(os.environ["DATABASE_URL"])
        app = create_app()
        with transaction(session_factory(os.environ["DATABASE_URL"])) as session:
            viewer = factories.user(session, role="viewer")
            headers = factories.auth_headers(app, viewer)
        client = app.test_client()
        engine = get_engine(os.environ["DATABASE_URL"])
        store = redis_client()

        def bare() -> None:
            assert client.get("/api/v1/health/live").status_code == 200

        def floor() -> None:
            bare()
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            store.ping()

        def baton() -> None:
            response = client.post("/api/v1/projects", json={"name": "x"}, headers=headers)
            assert response.status_code == 403

        runs = {"bare": bare, "floor": floor, "baton": baton}
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(50):  # warm-up
            for fn in runs.values():
                fn()
        names = list(runs)
        for i in range(args.rounds):
            for name in names[i % 3 :] + names[: i % 3]:
                start = time.perf_counter()
                runs[name]()
                samples[name].append(time.perf_counter() - start)
        for name in names:
            print(
                f"{name:6s} p50 {_pct(samples[name], 0.5):6.2f} ms  "
                f"p99 {_pct(samples[name], 0.99):6.2f} ms"
            )
        b, f, t = (statistics.median(samples[n]) for n in names)
        print(f"baton/bare  {t / b:.2f}x   baton/floor {t / f:.2f}x")
        print(f"edge cost over bare: {(t - b) * 1000:.2f} ms; floor's: {(f - b) * 1000:.2f} ms")
    finally:
        from models.db import get_engine

        get_engine.cache_clear()
        drop_database(PG, DB)
        store = None
        try:
            import redis

            store = redis.Redis.from_url(os.environ["REDIS_URL"])
            keys = list(store.scan_iter(match=f"{os.environ['BATON_REDIS_PREFIX']}:*"))
            if keys:
                store.delete(*keys)
        finally:
            if store is not None:
                store.close()


if __name__ == "__main__":
    main()
