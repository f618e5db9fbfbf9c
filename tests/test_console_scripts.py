"""`baton worker|beat|flower|api` are real wrappers: the console script (as installed) passes
every argument on, replaces itself with Celery or gunicorn (the same pid, so SIGTERM from a
service manager reaches them), and Flower never runs open or with its password in `ps`."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from tests.conftest import ROOT, RUN_ID
from tests.processes import BATON, children, cmdline, free_port, poll, wait_http


@pytest.mark.usefixtures("database_url")
def test_worker_passes_arguments_on_and_shuts_down_warmly_on_sigterm(scripts, tmp_path):
    from orchestration.canvas import all_queues

    name = f"w2-{RUN_ID}@%h"
    worker = scripts(
        ["worker", "-n", name, "--concurrency", "3", "--without-gossip", "--without-mingle"],
        tmp_path / "worker.log",
    )
    worker.wait_for(" ready.")
    # The console script became Celery (exec): same pid, the arguments as given, plus
    # Baton's queues because no -Q was given.
    argv = cmdline(worker.proc.pid)
    assert argv[1:5] == ["-m", "celery", "-A", "workers"]
    assert argv[-6:] == ["-n", name, "--concurrency", "3", "--without-gossip", "--without-mingle"]
    assert argv[argv.index("-Q") + 1] == ",".join(all_queues())
    assert f"w2-{RUN_ID}@" in worker.text()
    poll(lambda: len(children(worker.proc.pid)) == 3, 30, "three pool processes")

    assert worker.stop() == 0
    assert "Warm shutdown" in worker.text()


@pytest.mark.usefixtures("database_url")
def test_worker_keeps_the_queues_it_is_given(scripts, tmp_path):
    worker = scripts(
        ["worker", "-Q", f"t{RUN_ID}.urgent", "-c", "1", "-n", f"wq-{RUN_ID}@%h",
         "--without-gossip", "--without-mingle"],
        tmp_path / "worker.log",
    )  # fmt: skip
    worker.wait_for(" ready.")
    argv = cmdline(worker.proc.pid)
    assert argv.count("-Q") == 1 and argv[argv.index("-Q") + 1] == f"t{RUN_ID}.urgent"
    assert worker.stop() == 0


@pytest.mark.usefixtures("database_url")
def test_beat_keeps_its_schedule_under_baton_home(scripts, tmp_path):
    home = tmp_path / "home"
    beat = scripts(["beat"], tmp_path / "beat.log", {"BATON_HOME": str(home)})
    beat.wait_for("beat: Starting...")
    poll(lambda: any(home.glob("celerybeat-schedule*")), 30, "the schedule file")
    assert "beat" in cmdline(beat.proc.pid)
    assert not list(ROOT.glob("celerybeat-schedule*"))
    # The file appears mid-setup; a SIGTERM before the scheduler has loaded the result
    # backend makes Celery's shutdown sync import it again half-way (a circular-import
    # AttributeError, exit 1), seen on a loaded machine. Let the setup finish first.
    time.sleep(3)
    assert beat.stop() == 0


def test_flower_refuses_to_start_without_auth(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(
        [BATON, "flower", f"--port={free_port()}"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH" in done.stderr
    done = subprocess.run(
        [BATON, "flower", "--basic-auth=ops:secret"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "ps" in done.stderr


@pytest.mark.usefixtures("database_url")
def test_flower_reads_its_credentials_from_the_environment(scripts, tmp_path):
    port = free_port()
    password = f"pw-{RUN_ID}"
    flower = scripts(
        ["flower", f"--port={port}", "--address=127.0.0.1"],
        tmp_path / "flower.log",
        {"FLOWER_BASIC_AUTH": f"ops:{password}"},
    )
    url = f"http://127.0.0.1:{port}/api/workers"
    wait_http(url, flower)
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401
    assert httpx.get(url, auth=("ops", password), timeout=30).status_code == 200
    argv = cmdline(flower.proc.pid)
    assert "flower" in argv and not any(password in arg for arg in argv)
    flower.stop()


@pytest.mark.usefixtures("database_url")
def test_api_runs_gunicorn_in_place_and_stops_on_sigterm(scripts, tmp_path):
    port = free_port()
    api = scripts(
        ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        tmp_path / "api.log",
    )

    def live() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/health/live").status_code == 200
        except httpx.HTTPError:
            return False

    poll(live, 90, "the API")
    argv = cmdline(api.proc.pid)
    assert "gunicorn" in argv[2] and argv[-1] == "api:create_app()"
    assert f"127.0.0.1:{port}" in argv and "--workers" in argv
    assert api.stop() == 0


@pytest.mark.usefixtures("database_url")
def test_db_current_history_and_a_new_revision_are_one_command_each():
    def baton(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BATON, "db", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    current = baton("current")
    assert current.returncode == 0 and "(head)" in current.stdout + current.stderr
    history = baton("history")
    assert history.returncode == 0 and "<base> -> 0001" in history.stdout
    versions = ROOT / "models" / "migrations" / "versions"
    before = set(versions.glob("*.py"))
    made = baton("revision", "-m", f"probe {RUN_ID}")
    created = set(versions.glob("*.py")) - before
    try:
        assert made.returncode == 0, made.stderr
        (path,) = created
        text = path.read_text()
        assert f"probe {RUN_ID}" in text
        # Autogenerated against the migrated database: the models and the migrations agree.
        assert "op." not in text.split("def upgrade")[1], text
    finally:
        for path in created:
            path.unlink()
