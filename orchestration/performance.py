"""API performance from real measurements (seed 003 ``/analytics/performance``).

Every API response is recorded by an ``after_request`` hook into per-minute aggregates in
Redis (``<prefix>:perf:<epoch minute>``, one hash): the request count, the count per
status class, the count per latency bucket (buckets grow by 10%, so a percentile is exact
to within 10%), and the count per second of the minute (the peak). Nothing else is kept,
so the cost is the same at any traffic. A request only adds its counts to its process's
pending ones; a thread of the process adds those to Redis every ``FLUSH_SECONDS`` (one
script call a minute touched), as does a report before it reads and the process at exit.
So the request makes no round trip to Redis, and another process's report lags by at
most ``FLUSH_SECONDS``. Without Redis (embedded mode) the aggregates live in the
process's memory.

Resource usage is read when asked: the host's load, memory and disk, and the answering
process's RSS and CPU time (stdlib ``resource`` and ``/proc``).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import resource
import shutil
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from baton.settings import get_settings
from orchestration import redis_store
from orchestration.redis_store import key, redis_client

log = logging.getLogger(__name__)

BUCKET_GROWTH = 1.1  # each latency bucket is 10% wider than the one before
MIN_MS = 0.1
KEY_TTL_SECONDS = 2 * 3600  # a minute's aggregate outlives the longest window asked for
MAX_WINDOW_MINUTES = 120
FLUSH_SECONDS = 0.25  # how often a process adds its pending counts to Redis

_memory: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_memory_lock = threading.Lock()


def _bucket(elapsed_ms: float) -> int:
    return max(0, math.ceil(math.log(max(elapsed_ms, MIN_MS) / MIN_MS, BUCKET_GROWTH)))


def _bucket_ms(index: int) -> float:
    """The upper bound of a bucket, in milliseconds."""
    return MIN_MS * BUCKET_GROWTH**index


def record_request(status: int, elapsed_ms: float, *, now: float | None = None) -> None:
    """Count one answered request; never raises (a metrics outage must not fail a request)."""
    now = time.time() if now is None else now
    minute, second = divmod(int(now), 60)
    fields = ("n", f"s{status // 100}xx", f"b{_bucket(elapsed_ms)}", f"p{second}")
    if redis_client() is None:
        with _memory_lock:
            for name in fields:
                _memory[minute][name] += 1
            for old in [m for m in _memory if m < minute - MAX_WINDOW_MINUTES]:
                del _memory[old]
        return
    _start_flusher()
    with _pending_lock:
        counts = _pending.get(minute)
        if counts is None:
            counts = _pending[minute] = Counter()
        counts.update(fields)


# Counts recorded by this process and not yet in Redis: epoch minute -> field -> count.
_pending: dict[int, Counter[str]] = {}
_pending_lock = threading.Lock()
_flusher_pid: int | None = None


def _start_flusher() -> None:
    """This process's flushing thread, started on first use (again after a fork: a forked
    child has none of its parent's threads, and leaves its parent's counts to it)."""
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    with _pending_lock:
        if _flusher_pid == os.getpid():
            return
        if _flusher_pid is not None:
            _pending.clear()
        _flusher_pid = os.getpid()
        threading.Thread(target=_flush_every_period, name="baton-perf", daemon=True).start()
        # A daemon thread dies with its process: its last counts go out first.
        atexit.register(flush)


def _flush_every_period() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush()


def flush() -> None:
    """Add this process's pending counts to Redis now; never raises (counts Redis does
    not take are lost, as a request's own were before)."""
    global _pending
    with _pending_lock:
        taken, _pending = _pending, {}
    client = redis_client()
    if not taken or client is None:
        return
    try:
        record = redis_store.script(client, _RECORD)
        for minute, counts in taken.items():
            args = [KEY_TTL_SECONDS, *(x for item in counts.items() for x in item)]
            record([key("perf", str(minute))], args)
    except Exception as exc:  # noqa: BLE001 - Redis down: the figures are lost, not the API
        log.debug("performance samples not recorded: %s", exc)


# A minute's counts (field, amount pairs) and the key's expiry in one command.
_RECORD = """
for i = 2, #ARGV, 2 do
    redis.call("HINCRBY", KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call("EXPIRE", KEYS[1], ARGV[1])
"""


def _minutes(first: int, last: int) -> dict[int, dict[str, int]]:
    """Epoch minute -> its aggregate, for the minutes with traffic."""
    client = redis_client()
    if client is None:
        with _memory_lock:
            return {m: dict(_memory[m]) for m in range(first, last + 1) if m in _memory}
    pipe = client.pipeline(transaction=False)
    for minute in range(first, last + 1):
        pipe.hgetall(key("perf", str(minute)))
    return {
        minute: {k.decode(): int(v) for k, v in row.items()}
        for minute, row in zip(range(first, last + 1), pipe.execute(), strict=True)
        if row
    }


@dataclass
class PerformanceReport:
    window_minutes: int
    requests: int
    response_times: dict[str, float | None]
    error_rates: dict[str, float]
    throughput: dict[str, float]
    resource_usage: dict[str, float | None]
    process: dict[str, float | int | None] = field(default_factory=dict)


def _percentile(buckets: dict[int, int], total: int, fraction: float) -> float | None:
    if not total:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return round(_bucket_ms(index), 1)
    return None


def _meminfo() -> dict[str, int]:
    try:
        with open("/proc/meminfo") as f:
            return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    except OSError:
        return {}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def resource_usage() -> tuple[dict[str, float | None], dict[str, float | int | None]]:
    """(host-wide percentages as seed 003 names them, this process's own figures)."""
    cpus = os.cpu_count() or 1
    try:
        cpu = round(100.0 * os.getloadavg()[0] / cpus, 1)
    except OSError:
        cpu = None
    memory = _meminfo()
    total, available = memory.get("MemTotal"), memory.get("MemAvailable")
    disk = shutil.disk_usage(get_settings().home if get_settings().home.exists() else "/")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (
        {
            "cpu_utilization": cpu,
            "memory_usage": round(100.0 * (total - available) / total, 1)
            if total and available is not None
            else None,
            "disk_usage": round(100.0 * disk.used / disk.total, 1) if disk.total else None,
        },
        {
            "pid": os.getpid(),
            "rss_bytes": _rss_bytes(),
            "max_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "cpus": cpus,
        },
    )


def performance_report(minutes: int, *, now: float | None = None) -> PerformanceReport:
    """The last ``minutes`` whole and current minutes of API traffic."""
    flush()  # this process's own requests, up to this one
    now = time.time() if now is None else now
    current = int(now) // 60
    by_minute = _minutes(current - minutes + 1, current)
    rows = list(by_minute.values())
    total = sum(r.get("n", 0) for r in rows)
    buckets: dict[int, int] = defaultdict(int)
    for row in rows:
        for name, count in row.items():
            if name.startswith("b"):
                buckets[int(name[1:])] += count
    per_second = [c for r in rows for n, c in r.items() if n.startswith("p")]
    # Over the part of the window since the first minute with traffic: a fresh API's
    # rate is not diluted by the minutes before it started.
    span = max(1.0, now - min(by_minute) * 60) if by_minute else minutes * 60.0

    def rate(status_class: str) -> float:
        count = sum(r.get(f"s{status_class}", 0) for r in rows)
        return round(100.0 * count / total, 2) if total else 0.0

    host, process = resource_usage()
    return PerformanceReport(
        window_minutes=minutes,
        requests=total,
        response_times={
            "p50": _percentile(buckets, total, 0.50),
            "p95": _percentile(buckets, total, 0.95),
            "p99": _percentile(buckets, total, 0.99),
        },
        error_rates={"4xx": rate("4xx"), "5xx": rate("5xx")},
        throughput={
            "requests_per_second": round(total / span, 3),
            "peak_rps": max(per_second, default=0),
        },
        resource_usage=host,
        process=process,
    )
