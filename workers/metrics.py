"""Prometheus metrics shared by the API and the workers (prometheus-client).

With PROMETHEUS_MULTIPROC_DIR set (gunicorn, the Celery worker: `make run`, the image's
entrypoint and the test stacks set it, fresh at each start) every process writes its figures to
mmapped files there and `exposition()` merges them all, so one `/metrics` shows the gunicorn
workers and the Celery worker together. Each file is named by host and pid: containers sharing
the directory (compose's /data volume) have overlapping pids. Without the variable the figures
live in this process only (unit tests, a shell).

The figures (README, "Observability"):
- occ_http_requests_total{method,route,status} and occ_http_request_duration_seconds (same
  labels): route is the URL rule (`/download/<string:file_hash>`), never the raw path;
  "unmatched" when no rule matches. The duration ends when the view returns (for a streamed
  download: its first block).
- occ_upload_bytes_total: file bytes stored from uploads (direct and paid, without multipart
  framing); occ_download_bytes_total: verified file bytes handed to the server by /download.
- occ_jobs_total{status}: jobs created in, or moved to, each status code (occ_protocol.status).
- occ_celery_tasks_total{task,outcome}: outcome success, failure or retry (Celery signals).
- Store figures, set by the sketch refresh and the health report (gauges: the value last set
  by any process): occ_store_replicas{node} and occ_store_bytes{node} (chunks and manifests),
  exact, from the node census; occ_store_chunks and occ_store_chunks_below_target, estimates
  from the merged sketch (distinct chunks; chunks with fewer replicas than the target);
  occ_store_updated_timestamp_seconds.
- Scrub counters: occ_scrub_replicas_checked_total, occ_scrub_corrupt_replicas_total (bad or
  unreadable replicas found), occ_scrub_missing_copies_total, occ_scrub_repaired_copies_total,
  occ_scrub_lost_chunks_total.
"""

from __future__ import annotations

import fcntl
import glob
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.mmap_dict import MmapedDict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, read by every Prometheus version (every name here is plain ASCII).
TEXT_FORMAT = CONTENT_TYPE_PLAIN_0_0_4
HOST = socket.gethostname()
LOCK_FILE = ".lock"  # not *.db: never read as figures
ARCHIVE = "archive"  # the files dead processes are folded into: <type>_<host>-archive.db
FOLDED = ("counter", "histogram", "gauge_mostrecent")


def process_id(pid: int | str | None = None) -> str:
    """The name of a process's metric files: host and pid (pids repeat across containers)."""
    return f"{HOST}-{os.getpid() if pid is None else pid}"


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


if (_dir := multiproc_dir()) is not None:
    os.makedirs(_dir, exist_ok=True)
    # Before any metric below is made: every value is an mmapped file named by process_id().
    values.ValueClass = values.MultiProcessValue(process_id)
else:  # set but empty means unset here (prometheus-client alone would write to the cwd)
    values.ValueClass = values.MutexValue

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
LATEST: Final = "mostrecent"  # a gauge shows the value last set by any process, live or not

HTTP_REQUESTS = Counter(
    "occ_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "occ_http_request_duration_seconds",
    "Time from the start of a request to its response",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
UPLOAD_BYTES = Counter("occ_upload_bytes", "File bytes stored from uploads (direct and paid)")
DOWNLOAD_BYTES = Counter("occ_download_bytes", "Verified file bytes sent by downloads")
JOBS = Counter("occ_jobs", "Jobs created in or moved to a status code", ["status"])
TASKS = Counter("occ_celery_tasks", "Celery task outcomes", ["task", "outcome"])
STORE_REPLICAS = Gauge(
    "occ_store_replicas", "Chunk replicas on a node", ["node"], multiprocess_mode=LATEST
)
STORE_BYTES = Gauge(
    "occ_store_bytes",
    "Bytes used on a node by chunks and manifests",
    ["node"],
    multiprocess_mode=LATEST,
)
STORE_CHUNKS = Gauge(
    "occ_store_chunks", "Distinct chunks (merged-sketch estimate)", multiprocess_mode=LATEST
)
STORE_BELOW_TARGET = Gauge(
    "occ_store_chunks_below_target",
    "Chunks with fewer replicas than the target (merged-sketch estimate)",
    multiprocess_mode=LATEST,
)
STORE_UPDATED = Gauge(
    "occ_store_updated_timestamp_seconds",
    "When the store figures were last computed",
    multiprocess_mode=LATEST,
)
SCRUB = {
    field: Counter(f"occ_scrub_{name}", doc)
    for field, name, doc in (
        ("replicas", "replicas_checked", "Replicas read and verified by the scrub"),
        ("bad", "corrupt_replicas", "Corrupt or unreadable replicas found by the scrub"),
        ("missing", "missing_copies", "Copies short of the target found by the scrub"),
        ("repaired", "repaired_copies", "Copies written by the scrub's repairs"),
        ("lost", "lost_chunks", "Chunks the scrub found with no verified replica"),
    )
}


def record_census(nodes: list[dict[str, Any]], updated_at: float) -> None:
    """The exact per-node figures of one node census (NodeStats.to_dict() of each node)."""
    for node in nodes:
        STORE_REPLICAS.labels(node=node["node_id"]).set(int(node["chunks"]))
        STORE_BYTES.labels(node=node["node_id"]).set(int(node["used_bytes"]))
    STORE_UPDATED.set(updated_at)


def record_health(report: dict[str, Any]) -> None:
    """The estimates of a health report (occ_storage.health.health_report); unknown ones are
    left as they were (an overloaded or empty sketch gives no estimate)."""
    target = int(report["slo"]["target_replicas"])
    union = report["union_size"]["estimate"]
    if union is not None:
        STORE_CHUNKS.set(float(union))
    below = [c["estimate"] for c in report["replica_classes"] if c["replicas"] < target]
    if union is not None and None not in below:
        STORE_BELOW_TARGET.set(float(sum(below)))


def record_scrub(report: Any) -> None:
    """The counts of one scrub pass (occ_storage.store.ScrubReport)."""
    for field, counter in SCRUB.items():
        counter.inc(int(getattr(report, field)))


def task_outcome(task: str, outcome: str) -> None:
    TASKS.labels(task=task, outcome=outcome).inc()


def connect_task_signals() -> None:
    """Count every Celery task's success, failure and retry (in the process that ran it)."""
    from celery.signals import task_failure, task_retry, task_success

    def name_of(sender: Any) -> str:
        return str(getattr(sender, "name", None) or sender or "unknown")

    def on_success(sender: Any = None, **_: Any) -> None:
        task_outcome(name_of(sender), "success")

    def on_failure(sender: Any = None, **_: Any) -> None:
        task_outcome(name_of(sender), "failure")

    def on_retry(sender: Any = None, **_: Any) -> None:
        task_outcome(name_of(sender), "retry")

    task_success.connect(on_success, weak=False)
    task_failure.connect(on_failure, weak=False)
    task_retry.connect(on_retry, weak=False)


@contextmanager
def _directory_lock(path: str, exclusive: bool) -> Iterator[None]:
    """flock on PATH/.lock: scrapes share it, folding a dead process's files takes it alone (a
    scrape never sees a file twice, or a file that vanished between its listing and its read)."""
    with open(os.path.join(path, LOCK_FILE), "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield  # closing the file releases the lock


def exposition() -> tuple[bytes, str]:
    """The text format of every process's figures (multiprocess) or this process's; content type."""
    path = multiproc_dir()
    if path is None:
        return generate_latest(REGISTRY), TEXT_FORMAT
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    with _directory_lock(path, exclusive=False):
        return generate_latest(registry), TEXT_FORMAT


def fold_dead_process(pid: int) -> int:
    """gunicorn's child_exit: fold a dead worker's files into this host's archive files.

    Counters and histogram buckets add up, a 'mostrecent' gauge keeps the later value, live
    gauges go (what prometheus-client's mark_process_dead does). Without this every worker
    recycled by max_requests would leave its files behind and each scrape would read them all
    (about 1 s per 1,000 dead workers). Returns the number of files folded.
    """
    path = multiproc_dir()
    if path is None:
        return 0
    dead = process_id(pid)
    folded = 0
    with _directory_lock(path, exclusive=True):
        for src in glob.glob(os.path.join(path, f"*_{glob.escape(dead)}.db")):
            kind = os.path.basename(src)[: -len(f"_{dead}.db")]  # counter, gauge_mostrecent...
            if kind in FOLDED:
                archive = MmapedDict(os.path.join(path, f"{kind}_{process_id(ARCHIVE)}.db"))
                try:
                    for key, value, stamp, _ in MmapedDict.read_all_values_from_file(src):
                        total, last = archive.read_value(key)
                        if kind == "gauge_mostrecent":
                            if stamp >= last:
                                archive.write_value(key, value, stamp)
                        else:
                            archive.write_value(key, total + value, stamp)
                finally:
                    archive.close()
            elif not kind.startswith("gauge_live"):
                continue  # a gauge mode whose values cannot be folded: left as it is
            os.unlink(src)
            folded += 1
    return folded
