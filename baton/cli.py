"""The ``baton`` console script.

    baton up [--port 8000]          embedded API + a real Celery worker (no services needed)
    baton demo [--url URL]          submit an orchestration to a running Baton and follow it
    baton demo --embedded           start an embedded Baton, run the demo, stop it
    baton db upgrade|downgrade      migrations
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

from baton.settings import get_settings, reset_settings_cache

TERMINAL = {"completed", "failed", "cancelled"}


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def _queues() -> str:
    from orchestration.canvas import all_queues

    return ",".join(all_queues())


def worker_command(extra: list[str] | None = None, concurrency: int = 2) -> list[str]:
    return _celery(
        "worker", "-Q", _queues(), "-c", str(concurrency), "-l", "info",
        "--max-tasks-per-child", "1000", *(extra or []),
    )  # fmt: skip


def api_command(host: str, port: int, workers: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "-c", "python:baton.gunicorn_conf",
        "--bind", f"{host}:{port}", "--workers", str(workers),
        "--threads", "4", "--access-logfile", "-", "api:create_app()",
    ]  # fmt: skip


def _wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Stack:
    """The API and one worker (with beat) as child processes, stopped together."""

    def __init__(self, host: str, port: int, quiet: bool = False) -> None:
        self.host, self.port, self.quiet = host, port, quiet
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
            subprocess.Popen(worker_command(beat), stdout=out, stderr=subprocess.STDOUT)
        )
        api = subprocess.Popen(
            api_command(self.host, self.port), stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append(api)
        _wait_http(self.url, proc=api)

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
        print(f"Baton is up at {stack.url} — {mode}. Ctrl-C stops it.", flush=True)
        return stack.wait()
    finally:
        stack.stop()


def _demo(url: str, topic: str, model: str | None, timeout: float) -> int:
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
    location = accepted.headers["Location"]
    print(f"orchestration {accepted.json()['run_id']} accepted: {topic}")
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = client.get(location, headers=headers).json()
        run = data["run"]
        phases = data["phases"]
        for phase in phases:
            if seen.get(phase["code"]) != phase["status"]:
                seen[phase["code"]] = phase["status"]
                usage = phase["token_usage"]["total_tokens"]
                timing = (
                    f" {phase['execution_time_ms']} ms, {usage} tokens"
                    if phase["status"] == "completed"
                    else ""
                )
                # Progress as of this phase, not as of the poll: a fast run would print
                # 100% beside its first phase.
                done = sum(seen.get(p["code"]) == "completed" for p in phases)
                progress = done * 100 // max(len(phases), 1)
                print(
                    f"  [{progress:3d}%] {phase['code']} {phase['name']}: {phase['status']}{timing}"
                )
        if run["status"] in TERMINAL:
            break
        time.sleep(0.3)
    print(
        f"run {run.get('status')}: {run.get('completed_phases')}/{run.get('total_phases')} phases, "
        f"{run.get('token_usage', {}).get('total_tokens')} tokens, cost ${run.get('cost')}"
    )
    if run.get("error"):
        print(f"error: {run['error']}")
    return 0 if run.get("status") == "completed" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.embedded:
        return _demo(args.url.rstrip("/"), args.topic, args.model, args.timeout)
    if "BATON_HOME" not in os.environ and "DATABASE_URL" not in os.environ:
        os.environ["BATON_HOME"] = tempfile.mkdtemp(prefix="baton-demo-")
        reset_settings_cache()
    stack = Stack("127.0.0.1", _free_port(), quiet=True)
    print(
        f"starting an embedded Baton (API + Celery worker) in {get_settings().home} ...", flush=True
    )
    try:
        stack.start()
        return _demo(stack.url, args.topic, args.model, args.timeout)
    finally:
        stack.stop()


def cmd_db(args: argparse.Namespace) -> int:
    from models.migrate import downgrade, upgrade

    if args.action == "upgrade":
        upgrade(revision=args.revision or "head")
    else:
        downgrade(revision=args.revision or "-1")
    print(f"database {args.action}d: {get_settings().database_url.split('@')[-1]}")
    return 0


def _exec(command: list[str]) -> int:
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="baton", description="Baton: LLM-agent jobs on Celery.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="embedded API + worker (no services needed)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="submit an orchestration and follow it to the end")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--embedded", action="store_true", help="start (and stop) an embedded Baton")
    demo.add_argument("--topic", default="A REST API for user management")
    demo.add_argument("--model", default=None, help="e.g. sim/slow; default: routing decides")
    demo.add_argument("--timeout", type=float, default=300)
    demo.set_defaults(func=cmd_demo)

    db = sub.add_parser("db", help="migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?")
    db.set_defaults(func=cmd_db)

    api = sub.add_parser("api", help="the API under gunicorn")
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=2)
    api.set_defaults(func=lambda a: _exec(api_command(a.host, a.port, a.workers)))

    for name in ("worker", "beat", "flower"):
        p = sub.add_parser(name, help=f"celery {name} (extra arguments are passed on)")
        p.add_argument("extra", nargs=argparse.REMAINDER)
        p.set_defaults(name=name)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return _exec(worker_command(args.extra))
    if args.command == "beat":
        return _exec(_celery("beat", "-l", "info", *args.extra))
    if args.command == "flower":
        auth = get_settings().flower_basic_auth
        extra = ([f"--basic-auth={auth}"] if auth else []) + ["--max_tasks=10000", *args.extra]
        return _exec(_celery("flower", *extra))
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the stack stopped its children already
        return 130


if __name__ == "__main__":
    sys.exit(main())
