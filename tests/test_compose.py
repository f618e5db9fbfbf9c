"""docker-compose.yml as written: Docker does not run here, so each Baton service's
`command` is run as given (after substituting the environment, with the service hosts
pointed at this run's PostgreSQL and Redis) and must come up; the file itself is checked
for what operators expect (healthchecks, volumes, no password in it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ROOT, RUN_ID
from tests.processes import BATON, free_port, poll, wait_http

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
BATON_SERVICES = ["migrate", "api", "worker", "beat", "flower"]
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")
DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def substitute(value: str, env: dict[str, str]) -> str:
    def required(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise KeyError(f"{match.group(1)} is required by docker-compose.yml")
        return env[match.group(1)]

    value = REQUIRED.sub(required, value)
    return DEFAULTED.sub(lambda m: env.get(m.group(1)) or m.group(2), value)


def service_env(name: str, operator_env: dict[str, str]) -> dict[str, str]:
    raw = SERVICES[name].get("environment", {})
    return {k: substitute(str(v), operator_env) for k, v in raw.items()}


def test_compose_is_what_operators_expect():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD: baton" not in text and ":baton@" not in text
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        service_env("api", {"JWT_SECRET_KEY": "k"})
    assert "celery -A workers inspect ping -d worker@$$HOSTNAME" in str(
        SERVICES["worker"]["healthcheck"]["test"]
    )
    assert "-n" in SERVICES["worker"]["command"]
    assert SERVICES["beat"]["healthcheck"]["test"][1:] == ["baton", "healthcheck", "beat"]
    assert "beatdata:/var/lib/baton" in SERVICES["beat"]["volumes"]
    assert "beatdata" in COMPOSE["volumes"]
    flower_env = SERVICES["flower"]["environment"]
    assert "FLOWER_BASIC_AUTH" in flower_env
    assert not any("auth" in arg for arg in SERVICES["flower"]["command"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER baton$", dockerfile, re.M)
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()
    for name in BATON_SERVICES:
        assert SERVICES[name]["command"][0] == "baton", name


def _local(name: str, database_url: str, home: Path) -> dict[str, str]:
    """The service's environment with compose's hosts replaced by this run's services."""
    operator = {
        "POSTGRES_PASSWORD": "unused-here",
        "JWT_SECRET_KEY": os.environ["JWT_SECRET_KEY"],
        "FLOWER_BASIC_AUTH": f"ops:pw-{RUN_ID}",
    }
    env = service_env(name, operator)
    assert env["DATABASE_URL"].startswith("postgresql+psycopg2://baton:unused-here@postgres:5432/")
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"):
        env[key] = os.environ[key]
    env["BATON_HOME"] = str(home)
    env["HOSTNAME"] = socket.gethostname()
    env["PATH"] = f"{Path(BATON).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def _command(name: str, ports: dict[str, int]) -> list[str]:
    out = []
    for arg in SERVICES[name]["command"]:
        for fixed, port in ports.items():
            arg = arg.replace(fixed, str(port))
        out.append(arg)
    return out


def _run(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=120, **kwargs,
    )  # fmt: skip


@pytest.mark.usefixtures("database_url")
def test_every_compose_service_starts_as_written(scripts, tmp_path, database_url):
    home = tmp_path / "home"
    migrate = _run(SERVICES["migrate"]["command"], _local("migrate", database_url, home))
    assert migrate.returncode == 0, migrate.stderr

    api_port, flower_port, metrics_port = free_port(), free_port(), free_port()
    ports = {"8000": api_port, "5555": flower_port}
    started = {}
    for name in ("api", "worker", "beat", "flower"):
        env = _local(name, database_url, home)
        if name == "worker":
            assert env["BATON_WORKER_METRICS_PORT"] == "9808"
            env["BATON_WORKER_METRICS_PORT"] = str(metrics_port)
            # A node name of this run's own: other test runs share the broker.
            command = [
                arg.replace("worker@%h", f"worker-{RUN_ID}@%h") for arg in _command(name, ports)
            ]
        else:
            command = _command(name, ports)
        assert command[0] == "baton"
        started[name] = (scripts(command[1:], tmp_path / f"{name}.log", env), env)

    api, _ = started["api"]
    wait_http(f"http://127.0.0.1:{api_port}/api/v1/health/live", api)
    assert httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health/live").status_code == 200

    worker, worker_env = started["worker"]
    worker.wait_for(" ready.")
    ping = SERVICES["worker"]["healthcheck"]["test"][1].replace("$$HOSTNAME", "$HOSTNAME")
    health = _run(["sh", "-c", ping.replace("worker@", f"worker-{RUN_ID}@")], worker_env)
    assert health.returncode == 0, health.stdout + health.stderr
    assert "pong" in health.stdout

    beat, beat_env = started["beat"]
    beat.wait_for("beat: Starting...")
    poll(
        lambda: _run(["baton", "healthcheck", "beat"], beat_env).returncode == 0,
        60,
        "beat's healthcheck",
    )

    flower, _ = started["flower"]
    wait_http(f"http://127.0.0.1:{flower_port}/", flower)
    assert httpx.get(f"http://127.0.0.1:{flower_port}/api/workers").status_code == 401

    for name, (script, _) in started.items():
        assert script.proc.poll() is None, f"{name} exited: {script.text()[-2000:]}"


def test_beat_healthcheck_fails_without_a_recent_schedule(tmp_path):
    done = _run(["baton", "healthcheck", "beat"], {"BATON_HOME": str(tmp_path)})
    assert done.returncode == 1 and "unhealthy" in done.stderr
