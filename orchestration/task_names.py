"""The contract between orchestration/ (which sends) and workers/ (which runs)."""

from enum import StrEnum


class TaskName(StrEnum):
    RUN_STEP = "baton.step.run"
    JOIN_PHASE = "baton.phase.join"
    FINISH_JOB = "baton.job.finish"
    FAIL_JOB = "baton.job.fail"
    REAP_STALE_JOBS = "baton.maintenance.reap_stale_jobs"
    SWEEP_RESERVATIONS = "baton.budget.sweep_reservations"
    CANCEL_EXTERNAL = "baton.external.cancel"  # tell a task server a step was cancelled
    PURGE_EXPIRED = "baton.maintenance.purge_expired"
    DELIVER_WEBHOOK = "baton.webhooks.deliver"
    RESEND_WEBHOOKS = "baton.webhooks.resend_lost"
