"""The ``baton`` console script.

    baton up [--port 8000]          embedded API + a real Celery worker (no services needed)
    baton demo [--url URL]          submit an orchestration to a running Baton and follow it
    baton demo --embedded           start an embedded Baton, run the demo, stop it
    baton watch JOB_ID --token T    follow a job live (SSE) with a progress bar per phase
    baton stream [--port 8001]      the live-stream process (SSE, WebSocket, Socket.IO; gevent)
    baton db upgrade|downgrade|revision -m MSG|current|history   migrations
    baton api|worker|beat|flower    the production processes (thin wrappers)

With DATABASE_URL and CELERY_BROKER_URL set, the same commands use PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import httpx

from baton.observability import prepare_worker_metrics
from baton.settings import get_settings, reset_settings_cache
from baton.stream import stream_command

TERMINAL = {"completed", "failed", "cancelled"}


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def _queues() -> str:
    from orchestration.canvas import all_queues

    return ",".join(all_queues())


def _has_option(args: list[str], short: str | None, long: str) -> bool:
    """Whether ``args`` already give an option, in any of its spellings (-Qa, -Q a, --q=a)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == long or arg.startswith(long + "="):
            return True
        if short and arg.startswith(short) and not arg.startswith("--"):
            return True
    return False


def worker_command(extra: list[str] | None = None, concurrency: int | None = None) -> list[str]:
    """``celery -A workers worker`` with the caller's arguments unchanged, plus Baton's
    queues and an info log level unless the arguments choose their own."""
    extra = list(extra or [])
    defaults: list[str] = []
    if not _has_option(extra, "-Q", "--queues"):
        defaults += ["-Q", _queues()]
    if not _has_option(extra, "-l", "--loglevel"):
        defaults += ["-l", "info"]
    if concurrency is not None and not _has_option(extra, "-c", "--concurrency"):
        defaults += ["-c", str(concurrency)]
    return _celery("worker", *defaults, *extra)


def beat_command(extra: list[str] | None = None) -> list[str]:
    """``celery -A workers beat``; its schedule file lives under BATON_HOME (a volume in
    docker-compose), not in the working directory."""
    extra = list(extra or [])
    defaults: list[str] = []
    if not _has_option(extra, "-s", "--schedule"):
        home = get_settings().home
        home.mkdir(parents=True, exist_ok=True)
        defaults += ["-s", str(home / "celerybeat-schedule")]
    if not _has_option(extra, "-l", "--loglevel"):
        defaults += ["-l", "info"]
    return _celery("beat", *defaults, *extra)


FLOWER_AUTH_OPTIONS = ("--basic-auth", "--basic_auth")


def flower_command(extra: list[str] | None = None) -> list[str]:
    """``celery -A workers flower``. Flower reads FLOWER_BASIC_AUTH from its environment
    itself, so the password never appears on a command line (``ps``). Without it (or
    Flower's OAuth, ``--auth``) it refuses to start unless told ``--unauthenticated``."""
    extra = list(extra or [])
    if any(_has_option(extra, None, name) for name in FLOWER_AUTH_OPTIONS):
        raise SystemExit(
            "baton flower: pass the credentials in FLOWER_BASIC_AUTH=user:password, not on "
            "the command line (any user can read it with ps)"
        )
    unauthenticated = "--unauthenticated" in extra
    extra = [arg for arg in extra if arg != "--unauthenticated"]
    has_auth = bool(get_settings().flower_basic_auth) or _has_option(extra, None, "--auth")
    if not has_auth and not unauthenticated:
        raise SystemExit(
            "baton flower: no authentication configured. Set FLOWER_BASIC_AUTH=user:password "
            "(or Flower's --auth with OAuth), or pass --unauthenticated to run it open."
        )
    defaults = [] if _has_option(extra, None, "--max_tasks") else ["--max_tasks=10000"]
    return _celery("flower", *defaults, *extra)


def api_command(
    host: str | None = None, port: int | None = None, workers: int | None = 2,
    extra: list[str] | None = None,
) -> list[str]:  # fmt: skip
    """gunicorn with Baton's configuration (timeout, JSON logs with the request id, the
    metrics directory); the caller's gunicorn arguments are passed on unchanged."""
    extra = list(extra or [])
    defaults = ["--config", "python:baton.gunicorn_conf"]
    if not _has_option(extra, "-b", "--bind"):
        defaults += ["--bind", f"{host or '0.0.0.0'}:{port or 8000}"]
    if workers is not None and not _has_option(extra, "-w", "--workers"):
        defaults += ["--workers", str(workers)]
    if not _has_option(extra, None, "--threads"):
        defaults += ["--threads", "4"]
    return [sys.executable, "-m", "gunicorn", *defaults, *extra, "api:create_app()"]


def _wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _raise_if_signalled()
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the API process exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"Baton did not come up at {url} within {timeout:.0f}s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SIGNALLED: list[int] = []


def _interrupt(signum: int, _frame: object) -> None:
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def _raise_if_signalled() -> None:
    """Raised by ``_interrupt`` where the main thread happened to be, a KeyboardInterrupt
    is lost if that was a callback Python ignores exceptions from (a weakref's, during a
    garbage collection): the waiting loops raise it again."""
    if _SIGNALLED:
        raise KeyboardInterrupt(f"signal {_SIGNALLED[-1]}")


class Stack:
    """The API and one worker (with beat) as child processes, stopped together."""

    def __init__(
        self, host: str, port: int, quiet: bool = False, stream_port: int | None = None
    ) -> None:
        self.host, self.port, self.quiet = host, port, quiet
        self.stream_port = stream_port or port + 1
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"http://{self.host}:{self.stream_port}"

    def start(self) -> None:
        from models.migrate import upgrade

        # A service manager stops us with SIGTERM: take the children down with us, as
        # Ctrl-C does, instead of leaving them orphaned.
        signal.signal(signal.SIGTERM, _interrupt)
        settings = get_settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        upgrade()
        out = subprocess.DEVNULL if self.quiet else None
        if self.quiet:
            log = open(settings.home / "worker.log", "ab")  # noqa: SIM115 (lives as long as the child)
            out = log
        # The worker runs beat too (-B): the stale-job reaper and the budget-hold sweep are
        # part of "nothing lost", and one command is the whole embedded stack.
        beat = ["-B", "-s", str(settings.home / "celerybeat-schedule")]
        self.procs.append(
            subprocess.Popen(
                worker_command(beat, concurrency=2), stdout=out, stderr=subprocess.STDOUT
            )
        )
        api = subprocess.Popen(
            api_command(self.host, self.port), stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append(api)
        # Issue 10: the live-stream process (SSE, WebSocket, Socket.IO on gevent).
        stream = subprocess.Popen(
            stream_command(self.host, self.stream_port), stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append(stream)
        _wait_http(self.url, proc=api)
        _wait_http(self.stream_url, proc=stream)

    def stop(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this short
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def wait(self) -> int:
        """Until a child exits (the caller stops the rest) or Ctrl-C/SIGTERM arrives."""
        while all(p.poll() is None for p in self.procs):
            _raise_if_signalled()
            time.sleep(0.5)
        return 1


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack(args.host, args.port)
    settings = get_settings()
    mode = (
        "embedded (SQLite + filesystem broker)"
        if settings.is_embedded
        else settings.database_url.split("@")[-1]
    )
    try:
        stack.start()
        print(
            f"Baton is up at {stack.url} (live streams at {stack.stream_url}) — {mode}. "
            "Ctrl-C stops it.",
            flush=True,
        )
        return stack.wait()
    finally:
        stack.stop()


def _demo(
    url: str, topic: str, model: str | None, timeout: float, stream_url: str | None = None
) -> int:
    client = httpx.Client(base_url=url, timeout=30)
    email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
    password = uuid.uuid4().hex
    reg = client.post(
        "/api/v1/auth/register",
        json={
            "email": email,
            "password": password,
            "full_name": "Demo User",
            "organization_name": "Demo",
        },
    )
    if reg.status_code != 201:
        print(f"register failed: {reg.status_code} {reg.text}", file=sys.stderr)
        return 1
    headers = {"Authorization": f"Bearer {reg.json()['access_token']}"}
    body: dict[str, Any] = {
        "topic": topic,
        "custom_phases": ["ideation", "design", "implementation", "testing", "review"],
    }
    if model:
        body["settings"] = {"ai_model": model}
    accepted = client.post("/api/v1/orchestrate", json=body, headers=headers)
    if accepted.status_code != 202:
        print(f"submit failed: {accepted.status_code} {accepted.text}", file=sys.stderr)
        return 1
    job_id = accepted.json()["run_id"]
    print(f"orchestration {job_id} accepted: {topic}")
    # Issue 10: follow it live over SSE (progress bars, phase outputs, result, cost).
    from baton.watch import follow

    return follow(stream_url or url, job_id, reg.json()["access_token"], timeout=timeout)


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.embedded:
        stream_url = args.stream_url.rstrip("/") if args.stream_url else None
        return _demo(args.url.rstrip("/"), args.topic, args.model, args.timeout, stream_url)
    if "BATON_HOME" not in os.environ and "DATABASE_URL" not in os.environ:
        os.environ["BATON_HOME"] = tempfile.mkdtemp(prefix="baton-demo-")
        reset_settings_cache()
    stack = Stack("127.0.0.1", _free_port(), quiet=True, stream_port=_free_port())
    print(
        f"starting an embedded Baton (API + Celery worker) in {get_settings().home} ...", flush=True
    )
    try:
        stack.start()
        return _demo(stack.url, args.topic, args.model, args.timeout, stack.stream_url)
    finally:
        stack.stop()


def cmd_watch(args: argparse.Namespace) -> int:
    from baton.watch import follow

    return follow(args.url, args.job_id, args.token, timeout=args.timeout)


def cmd_db(args: argparse.Namespace) -> int:
    from models import migrate

    where = get_settings().database_url.split("@")[-1]
    if args.action == "revision":
        if not args.message:
            raise SystemExit("baton db revision: -m MESSAGE is required")
        migrate.revision(args.message, autogenerate=not args.empty)
        return 0
    if args.action == "current":
        migrate.current()
        return 0
    if args.action == "history":
        migrate.history()
        return 0
    if args.action == "upgrade":
        migrate.upgrade(revision=args.revision or "head")
    else:
        migrate.downgrade(revision=args.revision or "-1")
    print(f"database {args.action}d: {where}")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """beat: its schedule file (BATON_HOME) was written recently; beat rewrites it at
    least every few minutes while it runs (docker-compose's healthcheck)."""
    files = list(get_settings().home.glob("celerybeat-schedule*"))
    age = time.time() - max((f.stat().st_mtime for f in files), default=0)
    if age > args.max_age:
        print(f"unhealthy: beat's schedule was last written {age:.0f}s ago", file=sys.stderr)
        return 1
    print(f"healthy: beat's schedule written {age:.0f}s ago")
    return 0


def _exec(command: list[str]) -> int:
    """Become the process (no parent left to swallow SIGTERM): ``docker stop`` and
    service managers reach Celery or gunicorn directly, which shut down warmly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
    return 1  # not reached


def _wrapped(name: str, args: list[str]) -> int:
    if name == "worker":
        prepare_worker_metrics()
        return _exec(worker_command(args))
    if name == "beat":
        return _exec(beat_command(args))
    if name == "flower":
        return _exec(flower_command(args))
    # api: --host/--port are Baton's shorthand for gunicorn's --bind; the rest is gunicorn's.
    shorthand = argparse.ArgumentParser(prog="baton api", add_help=False)
    shorthand.add_argument("--host")
    shorthand.add_argument("--port", type=int)
    known, rest = shorthand.parse_known_args(args)
    return _exec(api_command(known.host, known.port, extra=rest))


WRAPPED = ("api", "worker", "beat", "flower")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in WRAPPED:
        # Thin wrappers: every argument goes to Celery/gunicorn as given (argparse would
        # refuse options it does not know, e.g. ``baton worker --concurrency 4``).
        return _wrapped(argv[0], argv[1:])
    parser = argparse.ArgumentParser(prog="baton", description="Baton: LLM-agent jobs on Celery.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="embedded API + worker (no services needed)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--stream-port", type=int, default=None, help="default: --port + 1")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="submit an orchestration and follow it to the end")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--stream-url", default=None, help="the stream process; default: --url")
    demo.add_argument("--embedded", action="store_true", help="start (and stop) an embedded Baton")
    demo.add_argument("--topic", default="A REST API for user management")
    demo.add_argument("--model", default=None, help="e.g. sim/slow; default: routing decides")
    demo.add_argument("--timeout", type=float, default=300)
    demo.set_defaults(func=cmd_demo)

    watch = sub.add_parser("watch", help="follow a job live (SSE) to its end")
    watch.add_argument("job_id")
    watch.add_argument("--url", default="http://127.0.0.1:8001", help="the stream process")
    watch.add_argument("--token", required=True, help="an access token")
    watch.add_argument("--timeout", type=float, default=3600)
    watch.set_defaults(func=cmd_watch)

    stream = sub.add_parser("stream", help="the live-stream process under gunicorn (gevent)")
    stream.add_argument("--host", default="0.0.0.0")
    stream.add_argument("--port", type=int, default=8001)
    stream.set_defaults(func=lambda a: _exec(stream_command(a.host, a.port)))

    db = sub.add_parser("db", help="migrations")
    db.add_argument("action", choices=["upgrade", "downgrade", "revision", "current", "history"])
    db.add_argument("revision", nargs="?", help="upgrade/downgrade target")
    db.add_argument("-m", "--message", help="revision: the new migration's message")
    db.add_argument("--empty", action="store_true", help="revision: no autogenerate")
    db.set_defaults(func=cmd_db)

    health = sub.add_parser("healthcheck", help="exit 0 when the named process is healthy")
    health.add_argument("process", choices=["beat"])
    health.add_argument("--max-age", type=float, default=600, help="seconds")
    health.set_defaults(func=cmd_healthcheck)

    for name in WRAPPED:
        # Listed for --help only: main() hands these over before argparse sees them.
        sub.add_parser(name, help=f"{name}: the production process; arguments are passed on")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the stack stopped its children already
        return 130


if __name__ == "__main__":
    sys.exit(main())
