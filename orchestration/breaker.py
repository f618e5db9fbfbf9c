"""A circuit breaker per provider, its state shared by every worker process (Redis).

closed --N failures within the window--> open --cool-down--> half-open (ONE probe call)
half-open --probe succeeds--> closed;  half-open --probe fails--> open again.

Every transition is one Lua script run by Redis (atomic across processes and hosts, on
Redis's own clock), so two workers can never both take the half-open probe. Asking a
closed breaker is one plain HMGET; failures and non-closed states go through the scripts. A probe
holder that dies without reporting loses the probe when its lease runs out.

Only failures that speak about the provider's health count: 5xx, 429, timeouts,
connection errors, cut streams and malformed answers (the caller decides; see
workers/providers/errors.py). Any other answer, even a 400, shows the server is up.

With REDIS_URL empty (the embedded mode) the state lives in this process only.
A Redis that cannot be reached fails open: calls go ahead, as if no breaker existed.

Lives in orchestration/ (not workers/) because the health endpoint reports it too.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from baton.settings import get_settings
from orchestration import redis_store

log = logging.getLogger(__name__)


class Decision(enum.StrEnum):
    ALLOW = "allow"  # closed: call
    PROBE = "probe"  # half-open: this call is the one probe
    REJECT = "reject"  # open (or another caller holds the probe): do not call


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    identity: str
    decision: Decision
    failures: int = 0  # consecutive failures counted so far (closed)
    last_error: str = ""  # what opened it, when rejected
    token: str = ""  # the probe's own id (to give the probe back)

    @property
    def allowed(self) -> bool:
        return self.decision is not Decision.REJECT


@dataclass(frozen=True)
class Snapshot:
    state: State
    failures: int = 0
    last_error: str = ""
    retry_in_seconds: float = 0.0  # open: until the next probe may go

    @property
    def probe_due(self) -> bool:
        return self.state is State.OPEN and self.retry_in_seconds <= 0


@dataclass(frozen=True)
class Thresholds:
    failures: int
    window_seconds: float
    cooldown_seconds: float

    @classmethod
    def from_settings(cls) -> Thresholds:
        s = get_settings()
        return cls(s.breaker_failures, s.breaker_window_seconds, s.breaker_cooldown_seconds)


class Breaker(Protocol):
    def allow(self, identity: str, lease_seconds: float) -> Permit: ...

    def record(self, permit: Permit, *, failed: bool, error_code: str = "") -> None: ...

    def release(self, permit: Permit) -> None: ...

    def snapshot(self, identities: list[str]) -> dict[str, Snapshot]: ...


class NoBreaker:
    """Every call goes ahead (tests of the bare retry loop; the benchmark's baseline)."""

    def allow(self, identity: str, lease_seconds: float) -> Permit:
        return Permit(identity, Decision.ALLOW)

    def record(self, permit: Permit, *, failed: bool, error_code: str = "") -> None:
        return None

    def release(self, permit: Permit) -> None:
        return None

    def snapshot(self, identities: list[str]) -> dict[str, Snapshot]:
        return {i: Snapshot(State.CLOSED) for i in identities}


# -- Redis ----------------------------------------------------------------------------------

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# KEYS[1] state hash; ARGV: cooldown, lease, token
_ALLOW = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at', 'probe_until', 'last_error')
local state = h[1] or 'closed'
local last = h[5] or ''
if state == 'closed' then return {'allow', tonumber(h[2] or '0'), ''} end
if state == 'open' and now < tonumber(h[3] or '0') + tonumber(ARGV[1]) then
  return {'reject', 0, last}
end
if state == 'half_open' and now < tonumber(h[4] or '0') then return {'reject', 0, last} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', tostring(now + tonumber(ARGV[2])),
           'probe', ARGV[3])
return {'probe', 0, last}
"""
)

# KEYS[1]; ARGV: failed (0|1), is_probe (0|1), threshold, window, error_code, ttl
_RECORD = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local ttl = tonumber(ARGV[6])
if ARGV[1] == '0' then
  if state ~= 'closed' and ARGV[2] == '0' then return state end
  redis.call('DEL', KEYS[1])
  return 'closed'
end
if state ~= 'closed' then
  if state == 'half_open' and ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'last_error', ARGV[5],
               'probe_until', '0')
    redis.call('EXPIRE', KEYS[1], ttl)
    return 'open'
  end
  return state
end
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local start = tonumber(redis.call('HGET', KEYS[1], 'window_start') or '0')
if failures == 0 or now - start > tonumber(ARGV[4]) then
  failures = 1
  start = now
else
  failures = failures + 1
end
if failures >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'failures', failures,
             'window_start', tostring(start), 'last_error', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ttl)
  return 'open'
end
redis.call('HSET', KEYS[1], 'failures', failures, 'window_start', tostring(start),
           'last_error', ARGV[5])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4])) + 1)
return 'closed'
"""
)

# KEYS[1]; ARGV: token. A probe that made no call (budget refused it, ...) gives it back.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'probe_until', '0')
end
return 1
"""

_SNAPSHOT = (
    _NOW
    + """
local out = {}
for i, k in ipairs(KEYS) do
  local h = redis.call('HMGET', k, 'state', 'failures', 'opened_at', 'last_error')
  local state = h[1] or 'closed'
  local wait = 0
  if state == 'open' then wait = tonumber(h[3] or '0') + tonumber(ARGV[1]) - now end
  out[i] = {state, tonumber(h[2] or '0'), h[4] or '', tostring(wait)}
end
return out
"""
)

OPEN_STATE_TTL_SECONDS = 24 * 3600  # an open breaker nobody calls any more is forgotten
_WARN_EVERY_SECONDS = 30.0


class RedisBreaker:
    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds.from_settings()
        self._scripts: dict[str, object] = {}
        self._warned_at = 0.0

    def _run(self, name: str, source: str, keys: list[str], args: list[object]) -> object:
        client = redis_store.redis_client()
        if client is None:
            raise RuntimeError("REDIS_URL is not configured")
        script = self._scripts.get(name)
        if script is None or script.registered_client is not client:  # type: ignore[attr-defined]
            script = self._scripts[name] = client.register_script(source)
        return script(keys=keys, args=args)  # type: ignore[operator]

    def _key(self, identity: str) -> str:
        return redis_store.key("breaker", identity)

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("circuit breaker state unreachable (calls go ahead): %s", exc)

    def allow(self, identity: str, lease_seconds: float) -> Permit:
        # The common case, closed, is one plain read; only an open or half-open breaker
        # needs the script (the probe must go to exactly one caller).
        try:
            client = redis_store.redis_client()
            if client is None:
                raise RuntimeError("REDIS_URL is not configured")
            state, failures = client.hmget(self._key(identity), "state", "failures")
        except Exception as exc:  # Redis down: fail open
            self._unreachable(exc)
            return Permit(identity, Decision.ALLOW)
        if state in (None, b"closed"):
            return Permit(identity, Decision.ALLOW, int(failures or 0))
        token = uuid.uuid4().hex
        try:
            decision, failures, last = self._run(  # type: ignore[misc]
                "allow",
                _ALLOW,
                [self._key(identity)],
                [self.thresholds.cooldown_seconds, max(lease_seconds, 1.0), token],
            )
        except Exception as exc:  # Redis down: fail open
            self._unreachable(exc)
            return Permit(identity, Decision.ALLOW)
        decision = Decision(decision.decode() if isinstance(decision, bytes) else decision)
        last = last.decode() if isinstance(last, bytes) else str(last)
        return Permit(identity, decision, int(failures), last, token)

    def record(self, permit: Permit, *, failed: bool, error_code: str = "") -> None:
        if not failed and permit.decision is Decision.ALLOW and permit.failures == 0:
            return  # the common case: closed, nothing counted, nothing to write
        t = self.thresholds
        try:
            self._run(
                "record",
                _RECORD,
                [self._key(permit.identity)],
                [
                    int(failed), int(permit.decision is Decision.PROBE), t.failures,
                    t.window_seconds, error_code, OPEN_STATE_TTL_SECONDS,
                ],
            )  # fmt: skip
        except Exception as exc:
            self._unreachable(exc)

    def release(self, permit: Permit) -> None:
        if permit.decision is not Decision.PROBE:
            return
        try:
            self._run("release", _RELEASE, [self._key(permit.identity)], [permit.token])
        except Exception as exc:
            self._unreachable(exc)

    def snapshot(self, identities: list[str]) -> dict[str, Snapshot]:
        if not identities:
            return {}
        rows = self._run(
            "snapshot",
            _SNAPSHOT,
            [self._key(i) for i in identities],
            [self.thresholds.cooldown_seconds],
        )
        out = {}
        for identity, (state, failures, last, wait) in zip(identities, rows, strict=True):  # type: ignore[arg-type]
            out[identity] = Snapshot(
                State(state.decode() if isinstance(state, bytes) else state),
                int(failures),
                last.decode() if isinstance(last, bytes) else str(last),
                max(0.0, float(wait)),
            )
        return out


# -- in-process (embedded mode) ------------------------------------------------------------


@dataclass
class _Entry:
    state: State = State.CLOSED
    failures: int = 0
    window_start: float = 0.0
    opened_at: float = 0.0
    probe_until: float = 0.0
    probe: str = ""
    last_error: str = ""


class LocalBreaker:
    """The same state machine in this process's memory (no Redis to share it through)."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds.from_settings()
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def allow(self, identity: str, lease_seconds: float) -> Permit:
        now = time.monotonic()
        with self._lock:
            e = self._entries.get(identity)
            if e is None or e.state is State.CLOSED:
                return Permit(identity, Decision.ALLOW, e.failures if e else 0)
            if e.state is State.OPEN and now < e.opened_at + self.thresholds.cooldown_seconds:
                return Permit(identity, Decision.REJECT, last_error=e.last_error)
            if e.state is State.HALF_OPEN and now < e.probe_until:
                return Permit(identity, Decision.REJECT, last_error=e.last_error)
            e.state, e.probe_until, e.probe = State.HALF_OPEN, now + lease_seconds, uuid.uuid4().hex
            return Permit(identity, Decision.PROBE, last_error=e.last_error, token=e.probe)

    def record(self, permit: Permit, *, failed: bool, error_code: str = "") -> None:
        now = time.monotonic()
        probe = permit.decision is Decision.PROBE
        with self._lock:
            e = self._entries.setdefault(permit.identity, _Entry())
            if not failed:
                if e.state is State.CLOSED or probe:
                    self._entries.pop(permit.identity, None)
                return
            if e.state is not State.CLOSED:
                if e.state is State.HALF_OPEN and probe:
                    e.state, e.opened_at, e.last_error, e.probe_until = (
                        State.OPEN,
                        now,
                        error_code,
                        0,
                    )
                return
            if e.failures == 0 or now - e.window_start > self.thresholds.window_seconds:
                e.failures, e.window_start = 1, now
            else:
                e.failures += 1
            e.last_error = error_code
            if e.failures >= self.thresholds.failures:
                e.state, e.opened_at = State.OPEN, now

    def release(self, permit: Permit) -> None:
        with self._lock:
            e = self._entries.get(permit.identity)
            if e is not None and permit.decision is Decision.PROBE and e.probe == permit.token:
                e.probe_until = 0

    def snapshot(self, identities: list[str]) -> dict[str, Snapshot]:
        now = time.monotonic()
        with self._lock:
            out = {}
            for identity in identities:
                e = self._entries.get(identity) or _Entry()
                wait = e.opened_at + self.thresholds.cooldown_seconds - now
                out[identity] = Snapshot(
                    e.state,
                    e.failures,
                    e.last_error,
                    max(0.0, wait) if e.state is State.OPEN else 0,
                )
            return out


_shared: tuple[object, Breaker] | None = None
_shared_lock = threading.Lock()


def shared_breaker() -> Breaker:
    """Redis-backed when REDIS_URL is set; else this process's own (embedded mode).
    One per process and configuration."""
    global _shared
    settings = get_settings()
    with _shared_lock:
        if _shared is None or _shared[0] is not settings:
            breaker = RedisBreaker() if settings.redis_url else LocalBreaker()
            _shared = (settings, breaker)
        return _shared[1]


def identity(scope: str, provider: str, behaviour: str | None = None) -> str:
    """``global:openai``; ``org:<id>:local`` for an organization's own server or key.
    The simulated provider has one breaker per behaviour (``global:sim/error``): each of
    its fault models stands for a different server."""
    name = f"{provider}/{behaviour}" if behaviour else provider
    return f"{scope}:{name}"
