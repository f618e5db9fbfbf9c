"""The circuit breaker's state machine, shared through real Redis by separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestration import redis_store
from orchestration.breaker import (
    Decision,
    LocalBreaker,
    Permit,
    RedisBreaker,
    State,
    Thresholds,
    identity,
)

ROOT = Path(__file__).resolve().parent.parent

# Run in another Python process: wait until a shared start time, ask the breaker once,
# print the decision (and report the probe's outcome when told to).
CHILD = """
import sys, time
from orchestration.breaker import RedisBreaker, Thresholds
name, start, cooldown, outcome = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
breaker = RedisBreaker(Thresholds(failures=3, window_seconds=60, cooldown_seconds=cooldown))
time.sleep(max(0.0, start - time.time()))
permit = breaker.allow(name, lease_seconds=30)
if permit.decision.value == "probe" and outcome != "none":
    breaker.record(permit, failed=outcome == "fail", error_code="server_error")
print(permit.decision.value, permit.last_error, flush=True)
"""


def run_children(name: str, count: int, cooldown: float, outcome: str = "none") -> list[str]:
    start = time.time() + 1.5  # every child is up and waiting before the start
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, name, str(start), str(cooldown), outcome],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    return [p.communicate(timeout=60)[0].strip() for p in procs]


def fail(breaker: RedisBreaker | LocalBreaker, name: str, times: int, code: str = "server_error"):
    for _ in range(times):
        breaker.record(Permit(name, Decision.ALLOW), failed=True, error_code=code)


def test_opens_after_n_consecutive_failures_and_is_seen_by_another_process():
    name = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    breaker = RedisBreaker(Thresholds(failures=3, window_seconds=60, cooldown_seconds=60))
    fail(breaker, name, 2)
    assert breaker.allow(name, 10).decision is Decision.ALLOW
    assert run_children(name, 1, cooldown=60) == ["allow"]
    fail(breaker, name, 1)
    assert breaker.allow(name, 10).decision is Decision.REJECT
    # Another process (its own connection, its own breaker object) sees it open.
    assert run_children(name, 1, cooldown=60) == ["reject server_error"]
    snap = breaker.snapshot([name])[name]
    assert snap.state is State.OPEN and snap.failures == 3 and snap.last_error == "server_error"
    assert 0 < snap.retry_in_seconds <= 60


def test_a_success_resets_the_count_and_old_failures_leave_the_window():
    name = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    breaker = RedisBreaker(Thresholds(failures=3, window_seconds=0.5, cooldown_seconds=60))
    fail(breaker, name, 2)
    permit = breaker.allow(name, 10)
    assert permit.failures == 2
    breaker.record(permit, failed=False)
    fail(breaker, name, 2)
    assert breaker.allow(name, 10).decision is Decision.ALLOW  # 2, not 4
    time.sleep(0.6)
    fail(breaker, name, 2)  # the window restarted: 2 again
    assert breaker.allow(name, 10).decision is Decision.ALLOW
    fail(breaker, name, 1)
    assert breaker.allow(name, 10).decision is Decision.REJECT


def test_half_open_lets_exactly_one_probe_through_across_processes():
    name = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    breaker = RedisBreaker(Thresholds(failures=3, window_seconds=60, cooldown_seconds=0.5))
    fail(breaker, name, 3)
    assert breaker.allow(name, 10).decision is Decision.REJECT
    time.sleep(0.6)  # cool-down over: half-open on the next ask
    decisions = run_children(name, 8, cooldown=0.5)
    assert sorted(d.split()[0] for d in decisions) == ["probe"] + ["reject"] * 7
    # The probe holder has not reported: nobody else may call meanwhile.
    assert breaker.allow(name, 10).decision is Decision.REJECT
    assert breaker.snapshot([name])[name].state is State.HALF_OPEN


def test_a_probe_success_closes_and_a_probe_failure_reopens():
    breaker = RedisBreaker(Thresholds(failures=2, window_seconds=60, cooldown_seconds=0.3))
    closes = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    fail(breaker, closes, 2)
    time.sleep(0.4)
    assert run_children(closes, 1, cooldown=0.3, outcome="ok") == ["probe server_error"]
    assert breaker.allow(closes, 10).decision is Decision.ALLOW
    assert breaker.snapshot([closes])[closes].state is State.CLOSED

    reopens = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    fail(breaker, reopens, 2)
    time.sleep(0.4)
    probe = breaker.allow(reopens, 10)
    assert probe.decision is Decision.PROBE
    breaker.record(probe, failed=True, error_code="timeout")
    again = breaker.allow(reopens, 10)
    assert again.decision is Decision.REJECT and again.last_error == "timeout"
    time.sleep(0.4)
    assert breaker.allow(reopens, 10).decision is Decision.PROBE


def test_a_probe_given_back_unused_lets_the_next_caller_probe():
    breaker = RedisBreaker(Thresholds(failures=1, window_seconds=60, cooldown_seconds=0.2))
    name = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    fail(breaker, name, 1)
    time.sleep(0.3)
    probe = breaker.allow(name, 30)
    assert probe.decision is Decision.PROBE
    assert breaker.allow(name, 30).decision is Decision.REJECT
    breaker.release(probe)  # e.g. the budget refused the call
    assert breaker.allow(name, 30).decision is Decision.PROBE


def test_a_dead_probe_holder_loses_the_probe_when_its_lease_ends():
    breaker = RedisBreaker(Thresholds(failures=1, window_seconds=60, cooldown_seconds=0.2))
    name = identity("global", f"p-{uuid.uuid4().hex[:8]}")
    fail(breaker, name, 1)
    time.sleep(0.3)
    assert breaker.allow(name, lease_seconds=1).decision is Decision.PROBE  # never reports
    assert breaker.allow(name, 1).decision is Decision.REJECT
    time.sleep(1.1)
    assert breaker.allow(name, 1).decision is Decision.PROBE


def test_keys_live_under_the_configured_prefix():
    name = identity("org:abc", "local")
    breaker = RedisBreaker(Thresholds(failures=1, window_seconds=60, cooldown_seconds=60))
    fail(breaker, name, 1)
    key = redis_store.key("breaker", name)
    assert key.startswith(os.environ["BATON_REDIS_PREFIX"] + ":")
    assert redis_store.redis_client().hget(key, "state") == b"open"


def test_an_unreachable_redis_fails_open(monkeypatch: pytest.MonkeyPatch):
    from baton.settings import reset_settings_cache

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    reset_settings_cache()
    try:
        breaker = RedisBreaker(Thresholds(failures=1, window_seconds=60, cooldown_seconds=60))
        name = identity("global", "anything")
        fail(breaker, name, 3)  # nothing recorded, nothing raised
        assert breaker.allow(name, 1).decision is Decision.ALLOW
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def test_the_in_process_breaker_follows_the_same_rules():
    breaker = LocalBreaker(Thresholds(failures=2, window_seconds=60, cooldown_seconds=0.2))
    name = "global:local"
    fail(breaker, name, 2)
    assert breaker.allow(name, 10).decision is Decision.REJECT
    time.sleep(0.3)
    probe = breaker.allow(name, 10)
    assert probe.decision is Decision.PROBE
    assert breaker.allow(name, 10).decision is Decision.REJECT
    breaker.record(probe, failed=False)
    assert breaker.allow(name, 10).decision is Decision.ALLOW
    assert breaker.snapshot([name])[name].state is State.CLOSED
