"""workers/metrics.py: store figures from a health report, scrub counts, task outcomes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from occ_storage.store import ScrubReport
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
