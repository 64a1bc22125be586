"""Celery tasks of paid uploads: each loads a quote id and runs one step of workers/services/paid/flow.py.

A step that waits (confirmations, a microservice, a busy lock) raises PollLater; the task turns
it into a short, growing, jittered retry and marks the job as polled, so the sweeper re-drives
only a job whose polling chain died. Transient errors are retried by Celery with backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from workers.celery_app import app
from workers.runtime import Runtime, get_runtime
from workers.services.paid import flow

POLL_BASE_S = 0.5
POLL_MAX_S = 15.0
# Polling has no retry limit of its own (Celery's ``retry(max_retries=None)`` would mean the
# task's default of 8): it ends by the job's bounds (MAX_ATTEMPTS, REMOTE_DEADLINE_S, expiry).
POLL_RETRIES = 1_000_000
RETRY: dict[str, Any] = {
    "autoretry_for": flow.TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": flow.MAX_RETRIES,
}


def _run(task: Any, step: Callable[..., None], quote_id: str, *args: Any) -> None:
    rt: Runtime = get_runtime()
    try:
        step(rt, quote_id, *args)
    except flow.PollLater as wait:
        rt.jobs.touch(quote_id)
        n = int(task.request.retries or 0)
        countdown = min(POLL_MAX_S, POLL_BASE_S * 1.5**n + wait.extra) * random.uniform(0.8, 1.2)
        raise task.retry(countdown=countdown, max_retries=POLL_RETRIES) from None


@app.task(name="process_payment", bind=True, **RETRY)
def process_payment(self: Any, quote_id: str) -> None:
    """Charge the quote (allowance, balance, write-ahead transferFrom, confirmations), then queue storing."""
    _run(self, flow.charge, quote_id)


@app.task(name="store_paid", bind=True, **RETRY)
def store_paid(self: Any, quote_id: str) -> None:
    """Store a paid quote's staged files (occ: the chunk store; others: their microservice)."""
    _run(self, flow.store, quote_id, int(self.request.retries or 0))


@app.task(name="refund_payment", bind=True, **RETRY)
def refund_payment(self: Any, quote_id: str) -> None:
    """Return the payment of a quote whose storing failed (write-ahead transferFrom treasury -> user)."""
    _run(self, flow.refund, quote_id)


@app.task(name="expire_paid_files", autoretry_for=flow.TRANSIENT, max_retries=flow.MAX_RETRIES)
def expire_paid_files() -> int:
    """Delete paid files whose time ran out (celery beat, hourly); returns how many."""
    return flow.expire_files(get_runtime())
