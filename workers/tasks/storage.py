"""Thin named tasks: load by id, call the library, record status. One task per file or job, never per chunk."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis

from occ_protocol.status import Status
from occ_storage.errors import NodeError, UnknownFileError
from workers import metrics
from workers.celery_app import app
from workers.runtime import get_runtime
from workers.services.health import health_check, refresh_merged_sketch
from workers.services.paid.flow import redrive_paid_jobs
from workers.services.storage import ORPHAN_CHUNK_AGE_S, file_lock
from workers.state import keys
from workers.state.locks import LockBusyError, renewed_lock

log = logging.getLogger("workers.tasks.storage")

MAX_DELIVERIES = 10
TRANSIENT = (NodeError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}


def _run_job(job_id: str, kind: str, work: Callable[[dict[str, Any]], str | None]) -> None:
    """Common frame of a job task: count the delivery, skip final jobs, lock the file, record status."""
    rt = get_runtime()
    job = rt.jobs.get(job_id)
    if job is None or job["kind"] != kind:
        log.warning("unknown job", extra={"job_id": job_id, "task": kind})
        return
    if Status(job["status"]).final:
        return
    if rt.jobs.count_delivery(job_id) > MAX_DELIVERIES:
        rt.jobs.advance(job_id, Status.STORE_INTERNAL_ERROR, "delivered too many times")
        log.error("poison job failed", extra={"job_id": job_id, "task": kind})
        return
    rt.jobs.advance(job_id, Status.STORING)
    file_hash = job["data"]["file_hash"]
    with file_lock(rt, file_hash):
        try:
            failure = work(job["data"])
        except UnknownFileError:
            failure = "file deleted"
    if failure:
        rt.jobs.advance(job_id, Status.STORE_INTERNAL_ERROR, failure)
        log.error("job failed: %s", failure, extra={"job_id": job_id, "task": kind})
    else:
        rt.jobs.advance(job_id, Status.DONE)
        log.info("job done", extra={"job_id": job_id, "task": kind, "file_hash": file_hash})


def _lost_message(result: Any) -> str | None:
    lost = list(getattr(result, "lost", ()) or ())
    return f"{len(lost)} chunk(s) have no verified replica" if lost else None


@app.task(name="replicate_file", **RETRY)
def replicate_file(job_id: str) -> None:
    """Complete replication after the quorum acknowledgement (copy-if-absent: idempotent)."""
    rt = get_runtime()
    _run_job(job_id, "replicate", lambda d: _lost_message(rt.store.repair(d["file_hash"])))


@app.task(name="rebalance_file", **RETRY)
def rebalance_file(job_id: str) -> None:
    """Move a file to its new replication factor: copy first, trim extras only once r copies verify."""
    rt = get_runtime()
    _run_job(
        job_id,
        "rebalance",
        lambda d: _lost_message(rt.store.rebalance(d["file_hash"], int(d["replication_factor"]))),
    )


@app.task(name="repair_file", **RETRY)
def repair_file(file_hash: str) -> None:
    """Repair one file back to its target (queued when a read or verify finds a bad replica)."""
    rt = get_runtime()
    with file_lock(rt, file_hash):
        try:
            result = rt.store.repair(file_hash)
        except UnknownFileError:
            return
    if msg := _lost_message(result):
        log.error("repair incomplete: %s", msg, extra={"file_hash": file_hash})


@app.task(name="repair_all", **RETRY)
def repair_all() -> int:
    """Repair sweep over every file (scheduled by the health check when the SLO is at risk)."""
    rt = get_runtime()
    hashes = rt.index.all_file_hashes()
    file_hash: str
    for i, file_hash in enumerate(hashes, 1):
        repair_file.run(file_hash)
        if i % 100 == 0:
            log.info("repair sweep progress %d/%d", i, len(hashes), extra={"task": "repair_all"})
    rt.redis.delete(keys.REPAIR_SCHEDULED)
    return len(hashes)


@app.task(name="scrub_nodes", **RETRY)
def scrub_nodes() -> dict[str, int]:
    """Randomised background scrub within an I/O budget: verify replicas, repair bad ones."""
    rt = get_runtime()
    try:
        with renewed_lock(rt.redis, keys.SCRUB_LOCK, wait_s=0):
            report = rt.store.scrub(random.Random(), rt.settings.scrub_budget_bytes)
    except LockBusyError:  # another scrub pass is running
        return {}
    metrics.record_scrub(report)
    out = {k: int(v) for k, v in vars(report).items() if isinstance(v, int)}
    log.info("scrub pass %s", out, extra={"task": "scrub_nodes"})
    return out


@app.task(name="rebuild_index", **RETRY)
def rebuild_index() -> int:
    """Rebuild the Redis file index from the manifests stored on the nodes."""
    count: int = get_runtime().store.rebuild_index()
    log.info("index rebuilt: %d files", count, extra={"task": "rebuild_index"})
    return count


@app.task(name="refresh_sketches", **RETRY)
def refresh_sketches() -> None:
    """Recompute node sketches and the securely aggregated merged sketch; cache it in Redis."""
    refresh_merged_sketch(get_runtime())


@app.task(name="check_health", **RETRY)
def check_health() -> dict[str, Any]:
    """Read the merged-sketch report; schedule a repair sweep when the SLO is missed at 95% confidence."""
    rt = get_runtime()
    verdict = health_check(rt)
    if verdict.get("repair_recommended") and rt.redis.set(
        keys.REPAIR_SCHEDULED, str(time.time()), nx=True, ex=3600
    ):
        log.warning(
            "replication SLO missed: repair sweep scheduled", extra={"task": "check_health"}
        )
        rt.enqueue("repair_all")
    return verdict


@app.task(name="sweep_jobs")
def sweep_jobs() -> int:
    """Re-drive jobs stuck in a non-final status past a deadline (a message lost with Redis)."""
    rt = get_runtime()
    redriven = 0
    for kind, task in (("replicate", "replicate_file"), ("rebalance", "rebalance_file")):
        for job in rt.jobs.stuck(kind, older_than=900):
            rt.enqueue(task, job["id"])
            redriven += 1
    redriven += redrive_paid_jobs(rt)
    if redriven:
        log.info("re-drove %d stuck jobs", redriven, extra={"task": "sweep_jobs"})
    return redriven


@app.task(name="clean_temp")
def clean_temp() -> int:
    """Janitor: remove temp files left by killed processes (nodes and staging), older than an hour."""
    rt = get_runtime()
    removed = sum(int(node.cleanup_temp(3600)) for node in rt.nodes)
    staging = rt.settings.staging_dir
    cutoff = time.time() - 3600
    if staging.is_dir():
        for path in staging.glob(".upload-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    return removed


@app.task(name="sweep_orphan_chunks")
def sweep_orphan_chunks(older_than_s: float = ORPHAN_CHUNK_AGE_S) -> int:
    """Remove chunks of uploads that failed midway (no manifest references them) after a day."""
    try:
        removed = get_runtime().store.sweep_orphans(older_than_s)
    except NodeError as exc:
        log.warning("orphan sweep skipped: %s", exc, extra={"task": "sweep_orphan_chunks"})
        return 0
    log.info("removed %d orphan chunk replicas", removed, extra={"task": "sweep_orphan_chunks"})
    return removed
