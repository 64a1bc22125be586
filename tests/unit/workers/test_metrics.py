"""workers/metrics.py: store figures from a health report, scrub counts, task outcomes, and the
folding of dead processes' multiprocess files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from occ_storage.store import ScrubReport
from tests.fixtures.metrics import parse
from workers import metrics

ROOT = Path(__file__).resolve().parents[3]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_health_report_sets_the_store_estimates() -> None:
    report = {
        "slo": {"target_replicas": 3},
        "union_size": {"estimate": 1000.0},
        "replica_classes": [
            {"replicas": 1, "estimate": 4.0},
            {"replicas": 2, "estimate": 6.5},
            {"replicas": 3, "estimate": 989.5},
        ],
    }
    metrics.record_health(report)
    assert sample("occ_store_chunks") == 1000.0
    assert sample("occ_store_chunks_below_target") == 10.5
    # an overloaded or empty sketch gives no estimate: the last figures stay
    metrics.record_health({**report, "union_size": {"estimate": None}})
    assert sample("occ_store_chunks") == 1000.0


@pytest.mark.parametrize("field", ["bad", "repaired", "missing", "lost", "replicas"])
def test_scrub_counts_add_up(field: str) -> None:
    name = f"{metrics.SCRUB[field]._name}_total"
    before = sample(name)
    metrics.record_scrub(ScrubReport(**{field: 3}))
    metrics.record_scrub(ScrubReport(**{field: 2}))
    assert sample(name) - before == 5


def test_task_signals_count_outcomes_by_task_name() -> None:
    from celery.signals import task_failure, task_retry, task_success

    import workers.celery_app  # noqa: F401  # connects the handlers

    class Task:
        name = "scrub_nodes"

    before = {
        o: sample("occ_celery_tasks_total", task="scrub_nodes", outcome=o)
        for o in ("success", "failure", "retry")
    }
    task_success.send(sender=Task(), result=None)
    task_success.send(sender=Task(), result=None)
    task_failure.send(sender=Task(), task_id="x", exception=ValueError())
    task_retry.send(sender=Task(), request=None, reason="x")
    got = {
        o: sample("occ_celery_tasks_total", task="scrub_nodes", outcome=o) - before[o]
        for o in before
    }
    assert got == {"success": 2, "failure": 1, "retry": 1}


def test_an_empty_multiproc_dir_means_one_process_not_the_working_directory(
    tmp_path: Path,
) -> None:
    code = "from workers import metrics; metrics.UPLOAD_BYTES.inc(5); print(metrics.exposition()[0].decode())"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "occ_upload_bytes_total 5.0" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no .db file left in the working directory


CHILD = """
import os, sys
from workers import metrics
metrics.HTTP_REQUESTS.labels(method="GET", route="/health", status="200").inc(int(sys.argv[1]))
metrics.HTTP_LATENCY.labels(method="GET", route="/health", status="200").observe(0.02)
metrics.STORE_CHUNKS.set(float(sys.argv[1]))
print(os.getpid())
"""


def test_dead_processes_fold_into_the_archive_with_the_same_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes write figures and exit; folding them keeps every sample of the merged
    exposition (sums add, the latest gauge wins) and leaves only the archive files."""

    def child(n: int) -> int:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = child(3), child(4)
    merged = parse(metrics.exposition()[0].decode())
    requests = (
        "occ_http_requests_total",
        frozenset({("method", "GET"), ("route", "/health"), ("status", "200")}),
    )
    assert merged[requests] == 7 and merged[("occ_store_chunks", frozenset())] == 4
    assert metrics.fold_dead_process(first) == 3  # counter, histogram, gauge_mostrecent
    assert metrics.fold_dead_process(second) == 3
    assert metrics.fold_dead_process(second) == 0  # nothing left of it
    assert parse(metrics.exposition()[0].decode()) == merged
    archive = metrics.process_id(metrics.ARCHIVE)
    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        f"counter_{archive}.db",
        f"gauge_mostrecent_{archive}.db",
        f"histogram_{archive}.db",
    ]
    # a third process after the fold adds to the archived totals; its gauge is the latest
    child(5)
    again = parse(metrics.exposition()[0].decode())
    assert again[requests] == 12 and again[("occ_store_chunks", frozenset())] == 5
    assert again[("occ_http_request_duration_seconds_count", requests[1])] == 3
