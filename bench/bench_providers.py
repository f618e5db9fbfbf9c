"""Benchmark (not a test): what Baton's provider layer adds to one call.

A local OpenAI-compatible server (tests/fake_openai.py) runs in its own process; this
process calls it, round after round, three ways in rotating order:
- bare: the ``openai`` SDK client alone (``client.chat.completions.create``), the baseline;
- baton: ``workers.providers.complete`` without the circuit breaker (catalog, retry loop,
  attempt records, pricing);
- baton+breaker: the same with the Redis circuit breaker (one atomic script per call);
- bare+ping: the bare call followed by one Redis PING, the floor of any check of state
  shared through Redis, measured in the same conditions.
Prints p50/p99 latency of each, what Baton adds (p50/p99 difference to the baseline), and
the ratios; then the breaker's cost beside one Redis round trip's. Usage: ``python bench/bench_providers.py [--calls 2000]`` (Redis must run).
"""

from __future__ import annotations

import argparse
import multiprocessing
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

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise the quarterly numbers in one line."},
]


def _serve(ready: multiprocessing.Queue) -> None:
    from tests.fake_openai import FakeOpenAI, completion_body

    server = FakeOpenAI([(200, {}, completion_body)])
    server.requests = _Discard()  # keep memory flat over thousands of calls
    ready.put(server.base_url)
    server.thread.join()


class _Discard(list):
    def append(self, item: object) -> None:  # only the count matters here
        return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()

    ready: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ready,), daemon=True)
    server.start()
    base_url = ready.get(timeout=30)

    from orchestration.breaker import NoBreaker, RedisBreaker
    from orchestration.model_catalog import Catalog, ProviderContext, ProviderSpec
    from workers.providers import CompletionRequest, complete
    from workers.providers.clients import get_client

    spec = ProviderSpec("bench", base_url, None, ("gpt-4o-mini",), timeout_seconds=10)
    context = ProviderContext(Catalog({**Catalog().specs, "bench": spec}))
    client = get_client(spec, context)  # the bare openai.OpenAI client (SDK retries off)
    request = CompletionRequest(
        model="bench/gpt-4o-mini", messages=MESSAGES, max_tokens=64, max_retries=2
    )
    redis_breaker, no_breaker = RedisBreaker(), NoBreaker()
    from orchestration import redis_store

    redis = redis_store.redis_client()

    def bare() -> None:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=64)

    def baton() -> None:
        complete(request, context=context, breaker=no_breaker)

    def baton_breaker() -> None:
        complete(request, context=context, breaker=redis_breaker)

    def bare_ping() -> None:
        bare()
        redis.ping()

    variants = {
        "bare": bare, "baton": baton, "baton+breaker": baton_breaker, "bare+ping": bare_ping,
    }  # fmt: skip
    names = list(variants)
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.calls):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]  # no variant always goes first
        for name in order:
            started = time.perf_counter()
            variants[name]()
            samples[name].append((time.perf_counter() - started) * 1000)
    server.terminate()

    base50 = _percentile(samples["bare"], 0.50)
    base99 = _percentile(samples["bare"], 0.99)
    print(f"provider layer, {args.calls} calls per variant to a local server over TCP")
    print(f"{'variant':<15}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}"
          f"{'p50 ratio':>11}{'p99 ratio':>11}")  # fmt: skip
    for name in names:
        values = samples[name]
        p50, p99 = _percentile(values, 0.50), _percentile(values, 0.99)
        print(
            f"{name:<15}{p50:>9.3f}{p99:>9.3f}{statistics.fmean(values):>9.3f}"
            f"{p50 - base50:>9.3f}{p99 - base99:>9.3f}{p50 / base50:>11.2f}{p99 / base99:>11.2f}"
        )
    p50 = {name: _percentile(values, 0.5) for name, values in samples.items()}
    breaker_cost = p50["baton+breaker"] - p50["baton"]
    round_trip = p50["bare+ping"] - p50["bare"]
    print(
        f"breaker check in a call: +{breaker_cost:.3f} ms p50; one Redis round trip in a call: "
        f"+{round_trip:.3f} ms p50 (ratio {breaker_cost / round_trip:.2f})"
    )


if __name__ == "__main__":
    main()
