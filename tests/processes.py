"""Production commands as child processes for tests: `baton ...` console scripts with their
output in a file, and polling helpers (no fixed sleeps)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BATON = str(Path(sys.executable).parent / "baton")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def poll(condition: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Script:
    """One `baton ...` process with its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            # faulthandler: a process that will not stop is made to print every thread's
            # stack into its log (SIGABRT) before it is killed, so a hang in CI says where.
            [BATON, *args], cwd=ROOT, env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
            stdout=self.out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float = 90) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.text()[-3000:]}")
            return marker in self.text()

        poll(seen, timeout, f"{marker!r} in {self.log.name}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            raise AssertionError(
                f"{self.proc.args} did not exit {timeout:g} s after SIGTERM; its log and "
                f"stacks:\n{self.text()[-12000:]}"
            ) from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.out.close()


def wait_http(url: str, script: Script | None = None, timeout: float = 90) -> None:
    def answers() -> bool:
        if script is not None and script.proc.poll() is not None:
            raise AssertionError(f"exited {script.proc.returncode}: {script.text()[-3000:]}")
        try:
            httpx.get(url, timeout=2)
            return True
        except httpx.HTTPError:
            return False

    poll(answers, timeout, url)
