"""The step engine: what happens to a step, one module each.

- ``core``: the step's context, the outcomes a task ends in, the worker id, writes
  retried through a short database outage;
- ``claim``: the compare-and-set that makes a delivery the step's runner;
- ``prompt``: the provider request built from the job, its phases and its agent;
- ``provider_hooks``: ``StepCalls``, the engine's side of every provider attempt (budget
  hold before, failed attempts and streamed text after);
- ``completion``: the answer or the failure written (a cancel that landed meanwhile wins),
  and the budget settled;
- ``phases``: a phase's join and the job's end;
- ``run``: one step from claim to completion (the ``run_step`` task's logic).

Tasks (workers/tasks.py), conversations (workers/chat.py), the tool loop and external
task servers import from here.
"""

from workers.engine.completion import complete_step, fail_step
from workers.engine.core import (
    DB_UNAVAILABLE,
    Outcome,
    StepContext,
    StepStopped,
    through_outage,
    worker_id,
)
from workers.engine.phases import fail_job, finish_job, join_phase
from workers.engine.provider_hooks import StepCalls
from workers.engine.run import run_step

__all__ = [
    "DB_UNAVAILABLE",
    "Outcome",
    "StepCalls",
    "StepContext",
    "StepStopped",
    "complete_step",
    "fail_job",
    "fail_step",
    "finish_job",
    "join_phase",
    "run_step",
    "through_outage",
    "worker_id",
]
