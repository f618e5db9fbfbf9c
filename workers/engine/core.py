"""What every part of the step engine shares: the step's context, the outcomes a task
ends in, the worker's id, and the retry of a write through a short database outage."""

from __future__ import annotations

import enum
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from models import (
    Agent,
    Job,
    JobPhase,
    JobStep,
    Organization,
)
from orchestration.model_catalog import ProviderContext

if TYPE_CHECKING:
    from workers.providers import CompletionRequest

log = logging.getLogger(__name__)


WORKER_ID_HOST = socket.gethostname()


def worker_id() -> str:
    return f"{WORKER_ID_HOST}:{os.getpid()}"


class Outcome(enum.Enum):
    CONTINUE = "continue"  # the canvas goes on to the next task
    STOP = "stop"  # the job is not running (cancelled, failed, paused): the chain ends here
    FAILED = "failed"  # this step's own error failed the job: the chain ends here


# The database cannot be reached (or dropped the connection, or a deadlock rolled the
# transaction back): the transaction is re-run, never the provider call before it.
DB_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError)
T = TypeVar("T")


def through_outage(what: str, write: Callable[[bool], T], *, deadline: float) -> T:
    """Run ``write(again)`` (one whole transaction) again until it commits or ``deadline``
    (``time.monotonic()``) would pass: a short database outage delays a write, never
    loses it. ``again`` is True on a re-run: a commit whose answer the outage cut may have
    landed, and the write must find its own work done (the first run skips that check)."""
    delay = 0.2
    again = False
    while True:
        try:
            return write(again)
        except DB_UNAVAILABLE as exc:
            again = True
            if time.monotonic() + delay >= deadline:
                raise
            log.warning("database unavailable while %s; again in %.1f s: %s", what, delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass
class StepContext:
    job: Job
    step: JobStep
    phase: JobPhase
    attempt: int
    agent: Agent | None
    organization: Organization | None
    previous: list[tuple[str, str]]  # (phase name, output) of earlier phases
    siblings: list[JobStep]
    providers: ProviderContext | None = None
    # time.monotonic() by which the step's writes must be done (before its soft limit)
    deadline: float = 0.0
    turn: int = 0  # the model turn of a tool loop (workers/tool_loop.py); 0 without tools
    creator_active: bool = True  # the user who submitted the job (a deactivated one: no call)
    # The organization had an active budget limit as of the claim (without one, the first
    # attempt needs no hold: a limit created during the call is charged at settlement).
    budget_limited: bool = True
    # The first attempt's hold, made in the claim's transaction (workers/engine/run.py).
    first_hold: FirstHold | None = None

    def call_key(self, number: int) -> str:
        """The ledger's and the reservation's key of the ``number``-th provider call of
        this delivery of the step: a redelivered step cannot write the same charge twice."""
        if self.turn:
            return f"{self.step.id}:{self.attempt}:t{self.turn}:{number}"
        return f"{self.step.id}:{self.attempt}:{number}"


@dataclass(frozen=True)
class FirstHold:
    """A hold made in the claim's transaction for the step's first attempt, with the
    request it was priced on."""

    call_key: str
    amount: Decimal
    request: CompletionRequest


class StepStopped(Exception):
    """The job stopped running (cancel, pause, emergency) before a provider call."""
