"""workers/tasks/paid.py: a step that waits becomes a bounded, jittered retry that marks the job."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from occ_protocol.status import Status
from tests.unit.workers.conftest import Queue
from workers.runtime import Runtime, set_runtime
from workers.services.paid import flow
from workers.services.paid.quotes import QUOTE_KIND
from workers.tasks import paid as paid_tasks


class Retried(Exception):
    pass


class FakeTask:
    def __init__(self, retries: int) -> None:
        self.request = SimpleNamespace(retries=retries)
        self.calls: list[dict[str, Any]] = []

    def retry(self, **kw: Any) -> Exception:
        self.calls.append(kw)
        return Retried()


@pytest.fixture
def installed(rt: Runtime) -> Any:
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.mark.parametrize(
    ("retries", "extra", "lo", "hi"),
    [(0, 0.0, 0.4, 0.6), (0, 2.0, 2.0, 3.0), (40, 0.0, 12.0, 18.0)],
)
def test_poll_later_becomes_a_jittered_retry(
    installed: Runtime, retries: int, extra: float, lo: float, hi: float
) -> None:
    installed.jobs.create("q1", QUOTE_KIND, Status.PAYMENT_CONFIRMING)

    def step(rt: Runtime, quote_id: str) -> None:
        raise flow.PollLater(extra)

    task = FakeTask(retries)
    with pytest.raises(Retried):
        paid_tasks._run(task, step, "q1")
    (call,) = task.calls
    assert lo <= call["countdown"] <= hi  # min(15, 0.5 * 1.5**n + extra) * U(0.8, 1.2)
    assert call["max_retries"] == paid_tasks.POLL_RETRIES
    job = installed.jobs.get("q1")
    assert job is not None and job["polled_at"] > 0  # the sweeper leaves a polled job alone


def test_a_finished_step_retries_nothing(installed: Runtime) -> None:
    seen = []
    task = FakeTask(0)
    paid_tasks._run(task, lambda rt, q, *a: seen.append((q, a)), "q2", 7)
    assert seen == [("q2", (7,))] and task.calls == []


def test_redrive_queues_each_stuck_stage_by_name_once(rt: Runtime, queue: Queue) -> None:
    for qid, status in (
        ("a", Status.PAYMENT_CHECKING),
        ("b", Status.STORING),
        ("c", Status.REFUNDING),
        ("d", Status.QUOTED),
        ("e", Status.DONE),
    ):
        rt.jobs.create(qid, QUOTE_KIND, status)
    assert flow.redrive_paid_jobs(rt, older_than=0) == 3
    assert sorted(queue.sent) == [
        ("process_payment", ("a",)),
        ("refund_payment", ("c",)),
        ("store_paid", ("b",)),
    ]
    queue.sent.clear()
    assert flow.redrive_paid_jobs(rt, older_than=0) == 0  # the marker holds for a second
    assert queue.sent == []
