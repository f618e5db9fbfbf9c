"""``baton watch JOB_ID``: follow a job over SSE with a progress bar per phase.

Prints each phase's output as it arrives (streamed text line by line, else the phase's
output when it completes), then the result, tokens and cost. A dropped connection is
resumed with ``Last-Event-ID``: streamed text that was missed meanwhile comes back from
the ``step.progress`` rows, so nothing is lost and nothing is printed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

RECONNECT_MAX_SECONDS = 5.0


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


def parse_sse(lines: Iterator[str]) -> Iterator[ServerSentEvent]:
    """The text/event-stream format: fields until a blank line; comments start with ':'."""
    current = ServerSentEvent()
    data: list[str] = []
    for line in lines:
        if not line:
            if data or current.id is not None or current.event != "message":
                current.data = "\n".join(data)
                yield current
            current, data = ServerSentEvent(), []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value


@dataclass
class Watcher:
    """What has been shown of one job, so a resumed stream shows only what is new."""

    console: Console
    progress: Progress
    bars: dict[str, Any] = field(default_factory=dict)
    shown: dict[tuple[str, str, int], int] = field(default_factory=dict)  # chars per attempt
    streamed_phases: set[str] = field(default_factory=set)
    pending: dict[str, str] = field(default_factory=dict)  # a streamed line not yet ended
    printed: set[str] = field(default_factory=set)  # phase outputs shown in full
    last_id: int = 0
    end: dict[str, Any] | None = None

    def add_phases(self, phases: list[dict[str, Any]]) -> None:
        for phase in phases:
            total = max(len(phase.get("steps") or []), 1)
            done = sum(s.get("status") == "completed" for s in phase.get("steps") or [])
            self.bars[phase["name"]] = self.progress.add_task(
                phase["name"], total=total, completed=done
            )

    def _print_text(self, phase: str, text: str) -> None:
        """Streamed text, a line at a time (a progress display cannot hold half a line)."""
        self.streamed_phases.add(phase)
        buffered = self.pending.get(phase, "") + text
        *lines, rest = buffered.split("\n")
        for line in lines:
            self.console.print(f"[dim]{phase} │[/dim] {line}", highlight=False, markup=True)
        self.pending[phase] = rest

    def _flush(self, phase: str) -> None:
        if self.pending.get(phase):
            self.console.print(f"[dim]{phase} │[/dim] {self.pending.pop(phase)}", highlight=False)

    def _new_text(self, key: tuple[str, str, int], offset: int, text: str) -> str:
        shown = self.shown.get(key, 0)
        end = offset + len(text)
        if end <= shown:
            return ""
        self.shown[key] = end
        return text[max(shown - offset, 0) :]

    def handle(self, event: ServerSentEvent) -> None:
        if event.id and event.id.isdigit():
            self.last_id = int(event.id)
        if event.event == "end":
            self.end = json.loads(event.data) if event.data else {}
            return
        if event.event == "dropped" or not event.data:
            return
        body = json.loads(event.data)
        data = body.get("data") or {}
        phase = data.get("phase") or body.get("phase") or ""
        if event.event == "step.delta":
            key = (phase, body.get("step", ""), int(body.get("attempt") or 1))
            offset = int(body.get("output_chars", 0)) - len(body.get("delta", ""))
            self._print_text(phase, self._new_text(key, offset, body.get("delta", "")))
        elif event.event == "step.progress":
            key = (phase, data.get("step", ""), int(data.get("attempt") or 1))
            self._print_text(
                phase, self._new_text(key, int(data.get("offset", 0)), data.get("delta", ""))
            )
        elif event.event == "phase.started" and phase in self.bars:
            self.progress.update(self.bars[phase], description=f"[bold]{phase}")
        elif event.event == "step.completed" and phase in self.bars:
            self.progress.advance(self.bars[phase])
        elif event.event == "phase.completed":
            if phase in self.bars:
                bar = self.bars[phase]
                self.progress.update(
                    bar, completed=self.progress.tasks[bar].total, description=f"[green]{phase}"
                )
            tokens = (data.get("token_usage") or {}).get("total_tokens")
            if phase in self.streamed_phases:
                self._flush(phase)
            elif data.get("output"):
                self.console.rule(f"{phase}")
                self.console.print(data["output"], highlight=False, markup=False)
                self.printed.add(data["output"])
            self.console.print(
                f"[green]✓ {phase}[/green] ({data.get('execution_time_ms')} ms, {tokens} tokens)"
            )
        elif event.event == "provider.attempt" and data.get("status") != "ok":
            self.console.print(
                f"[yellow]! {data.get('provider')}/{data.get('model')}: {data.get('error') or data.get('status')}[/yellow]"
            )
        elif event.event == "budget_alert":
            self.console.print(f"[yellow]$ {data.get('message')}[/yellow]")
        elif event.event in ("job.paused", "job.queued", "job.running") and body.get("seq", 0) > 1:
            self.console.print(
                f"[cyan]job {event.event.split('.')[1]}[/cyan] {data.get('reason') or ''}"
            )
        elif event.event == "job.failed":
            self.console.print(f"[red]✗ failed: {data.get('error')}[/red]")
        elif event.event == "job.cancelled":
            self.console.print("[red]✗ cancelled[/red]")  # fmt: skip

    def summary(self) -> int:
        job = self.end or {}
        status = job.get("status", "unknown")
        usage = job.get("token_usage") or {}
        result = job.get("result") or {}
        text = result.get("summary") or result.get("output")
        if text and text not in self.printed:  # an orchestration's summary is its last phase
            self.console.rule("result")
            self.console.print(text, highlight=False, markup=False)
        colour = "green" if status == "completed" else "red"
        self.console.print(
            f"[{colour}]{job.get('kind', 'job')} {status}[/{colour}]: "
            f"{job.get('completed_steps')}/{job.get('total_steps')} steps, "
            f"{usage.get('total_tokens', 0)} tokens "
            f"({usage.get('prompt_tokens', 0)} in, {usage.get('completion_tokens', 0)} out), "
            f"cost ${job.get('cost')}"
        )
        if job.get("error"):
            self.console.print(f"[red]error: {job['error']}[/red]")
        return 0 if status == "completed" else 1


def follow(
    url: str, job_id: str, token: str, *, timeout: float = 3600, console: Console | None = None
) -> int:
    """Follow the job at ``url`` (the stream process, or any API process) to its end."""
    console = console or Console()
    headers = {"Authorization": f"Bearer {token}"}
    client = httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(10, read=60))
    deadline = time.monotonic() + timeout
    detail = _get_detail(client, job_id, headers, deadline, console)
    if detail is None:
        return 2
    console.print(f"following {detail['kind']} {job_id}: {detail['title']}", highlight=False)
    progress = Progress(
        TextColumn("{task.description}", justify="left"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    )  # fmt: skip
    watcher = Watcher(console, progress)
    watcher.add_phases(detail.get("phases") or [])
    retry = 0.2
    with progress:
        while watcher.end is None and time.monotonic() < deadline:
            request_headers = dict(headers)
            if watcher.last_id:
                request_headers["Last-Event-ID"] = str(watcher.last_id)
            try:
                with client.stream(
                    "GET", f"/api/v1/jobs/{job_id}/stream", headers=request_headers
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        console.print(
                            f"[red]stream refused: {response.status_code} {response.text}[/red]"
                        )
                        if response.status_code in (401, 403, 404, 422):
                            return 2
                    else:
                        retry = 0.2
                        for event in parse_sse(response.iter_lines()):
                            watcher.handle(event)
                            if watcher.end is not None:
                                break
            except httpx.HTTPError as exc:
                console.print(
                    f"[yellow]connection lost ({type(exc).__name__}); resuming after event {watcher.last_id}[/yellow]"
                )
            if watcher.end is None:
                time.sleep(retry)
                retry = min(retry * 2, RECONNECT_MAX_SECONDS)
    if watcher.end is None:
        console.print("[red]gave up: the job did not finish in time[/red]")
        return 1
    return watcher.summary()


def _get_detail(
    client: httpx.Client, job_id: str, headers: dict[str, str], deadline: float, console: Console
) -> dict[str, Any] | None:
    while time.monotonic() < deadline:
        try:
            response = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        except httpx.HTTPError as exc:
            console.print(f"[yellow]cannot reach {client.base_url}: {exc}; retrying[/yellow]")
            time.sleep(1)
            continue
        if response.status_code == 200:
            return response.json()
        console.print(f"[red]{response.status_code}: {response.text}[/red]")
        return None
    return None
