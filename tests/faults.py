"""Faults a test can cause in real processes: its own ``redis-server`` to wipe or stop, a
TCP proxy in front of PostgreSQL to cut, and a Baton stack of production commands
(``baton api``, ``baton worker``, ``baton beat``) started on them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.processes import free_port
from tests.tcp_proxy import TcpProxy

__all__ = ["RedisServer", "Stack", "TcpProxy", "free_port", "wait_until"]


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class RedisServer:
    """A throw-away ``redis-server`` on a free port: no snapshot, no AOF, so a restart
    comes back empty, as a broker that lost its memory does."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            ],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._pings, 20, "redis-server to answer")

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class Stack:
    """Production commands as subprocesses of the installed console script, each in its
    own process group (stopped with its children, by this object only)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.baton = str(Path(sys.executable).parent / "baton")

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Path:
        log = self.log_dir / f"{name}.log"
        proc = subprocess.Popen(
            [self.baton, *args],
            env={**self.env, **(env or {})},
            cwd=self.log_dir,  # beat's schedule file lands here
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc, log))
        return log

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> None:
        log = self.start(name, "worker", env=env)
        proc = self.procs[-1][1]
        wait_until(
            lambda: proc.poll() is not None or " ready." in log.read_text(errors="replace"),
            90,
            f"worker {name} to be ready",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited: {log.read_text()[-3000:]}")

    def start_api(self, port: int) -> str:
        self.start("api", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        url = f"http://127.0.0.1:{port}"

        def live() -> bool:
            try:
                return httpx.get(f"{url}/api/v1/health/live", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, 90, "the API to answer", interval=0.3)
        return url

    def log_text(self, name: str) -> str:
        return "\n".join(
            log.read_text(errors="replace") for n, _, log in self.procs if n.startswith(name)
        )

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()
