"""Benchmark (not a test): what the /analytics/performance measurements cost a request.

In one loop, interleaved: ``orchestration.performance.record_request`` (one pipelined
Redis round trip: four HINCRBY and an EXPIRE) beside one bare Redis PING, the floor of
anything that writes to Redis per request. Prints p50/p99 of each and their ratio. Then
the time of ``performance_report`` over a full 60-minute window.
Usage: ``python bench/bench_performance.py [--calls 5000]`` (Redis must run).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/2")
os.environ["BATON_REDIS_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}"
os.environ.setdefault("BATON_HOME", tempfile.mkdtemp(prefix="baton-bench-"))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()

    from orchestration import performance
    from orchestration.redis_store import key, redis_client

    client = redis_client()
    assert client is not None, "REDIS_URL must be set"
    record, ping = [], []
    now = time.time()
    for i in range(args.calls):
        started = time.perf_counter()
        performance.record_request(200 if i % 10 else 404, 5.0 + i % 300, now=now + i % 3600)
        record.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.ping()
        ping.append(time.perf_counter() - started)
    reports = []
    for _ in range(20):
        started = time.perf_counter()
        performance.performance_report(60, now=now + 3599)
        reports.append(time.perf_counter() - started)
    for name, values in (("record_request", record), ("redis PING", ping)):
        print(
            f"{name:>15}: p50 {statistics.median(values) * 1e6:7.1f} us  "
            f"p99 {_pct(values, 0.99) * 1e6:7.1f} us"
        )
    ratio = statistics.median(record) / statistics.median(ping)
    print(f"record_request / PING (p50): {ratio:.2f}x")
    print(f"performance_report over 60 minutes: p50 {statistics.median(reports) * 1e3:.2f} ms")
    stale = list(client.scan_iter(match=key("perf", "*"), count=500))
    if stale:
        client.delete(*stale)


if __name__ == "__main__":
    main()
