"""Benchmark (not a test): many SSE clients on one stream process, in one run.

One ``baton stream`` process (gunicorn, one gevent worker) serves N concurrent SSE
clients (default 1000), each following one of 50 running jobs. The bench plays the
worker: it publishes streamed chunks through ``orchestration.live.publish`` and event
rows through ``append_event`` (a committed row, then the after-commit publish), each
stamped with the time just before publishing (events: just before the commit). Reported:

- delivery latency p50/p99 from that stamp to the SSE client, beside a bare Redis pub/sub
  subscriber (``PSUBSCRIBE`` on the same channels, in its own process) in the same run;
- the stream worker's memory per open stream (RSS with N streams open minus RSS before,
  divided by N) and its CPU time over the publishing window.

Needs PostgreSQL and Redis (the machine's, or BENCH_PG / BENCH_REDIS).
Usage: ``python bench/bench_streams.py [--clients 1000] [--jobs 50] [--rate 100] [--seconds 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_bench_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
ENV = {
    **os.environ,
    "DATABASE_URL": f"{PG}/{DB}",
    "CELERY_BROKER_URL": f"{REDIS}/0",
    "CELERY_RESULT_BACKEND": f"{REDIS}/1",
    "REDIS_URL": f"{REDIS}/2",
    "BATON_QUEUE_PREFIX": f"bench{RUN}",
    "BATON_REDIS_PREFIX": f"bench{RUN}",
    "BATON_HOME": tempfile.mkdtemp(prefix="baton-bench-"),
    "BATON_API_RATE_LIMIT": "1000000 per minute",
    "BATON_STREAM_MAX_PER_USER": "100000",
    "BATON_STREAM_BUFFER_MESSAGES": "5000",
}
os.environ.update(ENV)

import httpx  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- clients (their own processes) ---------------------------------------------------------


async def _sse_client(port: int, path: str, token: str, out: list, opened: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(status)
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    opened.append(1)
    buffer = b""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            return
        buffer += (await reader.readexactly(size + 2))[:-2]
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            now = time.time()
            kind, data = "message", ""
            for line in raw.decode().split("\n"):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
            if kind == "step.delta":
                out.append(("delta", now - float(json.loads(data)["delta"])))
            elif kind == "bench.tick":
                out.append(("event", now - json.loads(data)["data"]["sent_at"]))


def sse_clients(
    port: int, targets: list[tuple[str, int]], token: str, seconds: float, conn
) -> None:  # type: ignore[no-untyped-def]
    async def main() -> tuple[list, int]:
        out: list = []
        opened: list = []
        tasks = []
        for i, (job_id, after) in enumerate(targets):
            path = f"/api/v1/jobs/{job_id}/stream?after={after}"
            tasks.append(asyncio.create_task(_sse_client(port, path, token, out, opened)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # a connection storm is not what is measured
        deadline = time.monotonic() + 120
        while len(opened) < len(targets) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        conn.send(("opened", len(opened)))
        conn.recv()  # publishing starts
        out.clear()
        await asyncio.sleep(seconds + 2)
        for task in tasks:
            task.cancel()
        return out, len(opened)

    out, opened = asyncio.run(main())
    conn.send(("done", out, opened))


def bare_subscriber(pattern: str, conn) -> None:  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(ENV["REDIS_URL"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(pattern)
    conn.send(("opened", 1))
    out = []
    while True:
        if conn.poll() and conn.recv() == "stop":
            break
        message = pubsub.get_message(timeout=0.1)
        if message is None:
            continue
        now = time.time()
        body = json.loads(message["data"])
        if body["type"] == "step.delta":
            out.append(("delta", now - float(body["delta"])))
        elif body.get("event") == "bench.tick":
            out.append(("event", now - body["data"]["sent_at"]))
    conn.send(("done", out, 1))


# -- the worker's side -----------------------------------------------------------------------


def publish(job_ids: list[uuid.UUID], rate: float, seconds: float, event_every: int) -> int:
    from models.db import session_factory, transaction
    from orchestration import live
    from orchestration.state import append_event

    sessions = session_factory(ENV["DATABASE_URL"])
    interval = 1.0 / rate
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        job_id = job_ids[sent % len(job_ids)]
        if sent % event_every == event_every - 1:
            with transaction(sessions) as session:
                append_event(
                    session, job_id=job_id, type="bench.tick", data={"sent_at": time.time()}
                )
        else:
            live.publish(
                str(job_id),
                {"type": "step.delta", "job_id": str(job_id), "step_id": str(job_id),
                 "phase": "Execution", "step": "execution", "attempt": 1, "index": sent,
                 "delta": f"{time.time():.6f}", "output_chars": sent},
            )  # fmt: skip
        sent += 1
        time.sleep(max(0.0, start + sent * interval - time.monotonic()))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100, help="messages/s over all jobs")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--event-every", type=int, default=5, help="every Nth message is a row")
    parser.add_argument("--client-processes", type=int, default=2)
    args = parser.parse_args()

    from baton.stream import stream_command

    create_database(PG, DB)
    server = None
    try:
        from models.migrate import upgrade

        upgrade(ENV["DATABASE_URL"])
        port = 18200 + int(RUN[:3], 16) % 700
        server = subprocess.Popen(
            stream_command("127.0.0.1", port), cwd=ROOT, env=ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the stream process did not start")
            time.sleep(0.3)
        reg = httpx.post(f"{url}/api/v1/auth/register", timeout=30, json={
            "email": f"bench-{RUN}@example.com", "password": uuid.uuid4().hex,
            "organization_name": "Bench"})  # fmt: skip
        token = reg.json()["access_token"]
        org_id = reg.json()["user"]["organization_id"]
        job_ids = make_running_jobs(uuid.UUID(org_id), args.jobs)
        worker_pid = int(
            subprocess.run(["ps", "-o", "pid=", "--ppid", str(server.pid)],
                           capture_output=True, text=True).stdout.split()[0]
        )  # fmt: skip
        # Warm the worker (imports, pools, the hub's subscription) before measuring memory.
        warm = httpx.get(
            f"{url}/api/v1/jobs/{job_ids[0]}", headers={"Authorization": f"Bearer {token}"}
        )
        assert warm.status_code == 200, warm.text
        time.sleep(1)
        rss_before = rss_kib(worker_pid)

        targets = [(str(job_ids[i % len(job_ids)]), 1) for i in range(args.clients)]
        pipes, procs = [], []
        share = [targets[i :: args.client_processes] for i in range(args.client_processes)]
        for part in share:
            parent, child = mp.Pipe()
            proc = mp.Process(target=sse_clients, args=(port, part, token, args.seconds, child))
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        parent, child = mp.Pipe()
        bare = mp.Process(target=bare_subscriber, args=(f"bench{RUN}:jobs:*:live", child))
        bare.start()
        opened = sum(p.recv()[1] for p in pipes)
        parent.recv()
        time.sleep(2)
        rss_open = rss_kib(worker_pid)
        print(f"{opened}/{args.clients} SSE streams open on one stream process (pid {worker_pid})")
        cpu_start = cpu_seconds(worker_pid)
        for pipe in pipes:
            pipe.send("go")
        sent = publish(job_ids, args.rate, args.seconds, args.event_every)
        cpu_used = cpu_seconds(worker_pid) - cpu_start
        time.sleep(1)
        parent.send("stop")
        results = [p.recv() for p in pipes]
        bare_out = parent.recv()[1]
        for proc in [*procs, bare]:
            proc.join(timeout=30)
        sse_out = [item for r in results for item in r[1]]
        report(args, sent, opened, sse_out, bare_out, rss_before, rss_open, cpu_used)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        from models.db import get_engine

        get_engine.cache_clear()
        drop_database(PG, DB)
        drop_run_keys()


def make_running_jobs(org_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    from models import Job
    from models.db import session_factory, transaction

    ids = [uuid.uuid4() for _ in range(count)]
    with transaction(session_factory(ENV["DATABASE_URL"])) as session:
        for job_id in ids:
            session.add(Job(id=job_id, organization_id=org_id, kind="task", status="running",
                            priority="medium", title="bench", input={}, settings={},
                            progress=0, total_steps=1, completed_steps=0, event_seq=1))  # fmt: skip
    return ids


def report(args, sent, opened, sse_out, bare_out, rss_before, rss_open, cpu_used) -> None:  # type: ignore[no-untyped-def]
    print(
        f"published {sent} messages in {args.seconds:.0f} s over {args.jobs} jobs "
        f"(every {args.event_every}th an event row); {opened} clients, "
        f"{len(sse_out)} deliveries ({len(sse_out) / args.seconds:.0f}/s)"
    )
    for kind in ("delta", "event"):
        sse = [v * 1000 for k, v in sse_out if k == kind]
        bare = [v * 1000 for k, v in bare_out if k == kind]
        if not sse or not bare:
            continue
        p50, p99 = percentile(sse, 0.5), percentile(sse, 0.99)
        b50, b99 = percentile(bare, 0.5), percentile(bare, 0.99)
        print(
            f"{kind:5s} latency ms  SSE via stream process: p50 {p50:7.2f}  p99 {p99:7.2f}  "
            f"(n={len(sse)}) | bare redis subscriber: p50 {b50:6.2f}  p99 {b99:6.2f}  "
            f"(n={len(bare)}) | ratio p50 {p50 / b50:5.1f}x  p99 {p99 / b99:5.1f}x"
        )
    expected = sent * opened / args.jobs
    print(
        f"delivered {len(sse_out)} of ~{expected:.0f} expected ({100 * len(sse_out) / max(expected, 1):.1f}%)"
    )
    per_stream = (rss_open - rss_before) / max(opened, 1)
    print(
        f"stream worker RSS {rss_before / 1024:.1f} MiB -> {rss_open / 1024:.1f} MiB with {opened} "
        f"streams open: {per_stream:.1f} KiB per open stream; "
        f"CPU {cpu_used:.1f} s over {args.seconds:.0f} s of publishing "
        f"({statistics.fmean([cpu_used / args.seconds]) * 100:.0f}% of one core)"
    )


if __name__ == "__main__":
    main()
