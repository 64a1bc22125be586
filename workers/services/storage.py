"""What the storage views ask of the back end: store with quorum, read, verify, list, delete, enqueue jobs."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, cast

import redis

from occ_protocol.status import Status
from occ_storage.index import Manifest
from workers.nodes_config import has_chunk
from workers.runtime import get_runtime
from workers.settings import write_quorum

log = logging.getLogger("workers.storage")


LOCK_TTL_S = 30  # a dead holder's lock lapses this soon; a live holder renews it
ORPHAN_CHUNK_AGE_S = 86_400.0  # longer than any upload: orphan sweep age, chunks kept by DELETE


class LockBusyError(TimeoutError):
    """Another job holds the lock (a file being repaired, a paid quote being stored)."""


@contextlib.contextmanager
def renewed_lock(
    client: redis.Redis, name: str, wait_s: float, ttl_s: float = LOCK_TTL_S
) -> Iterator[None]:
    """Hold the Redis lock ``name`` across processes, renewed by a thread every ttl_s/3.

    A SIGKILLed holder cannot release it, so it lapses within ``ttl_s``; a live holder keeps it
    however long the work takes. Raises LockBusyError if it is not free within ``wait_s``.
    """
    # thread_local=False: the renewing thread must see the token the acquiring thread got
    lock = client.lock(name, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(blocking=wait_s > 0):
        raise LockBusyError(f"{name} is held by another job")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                lock.reacquire()
            except Exception:  # lost the lock: the work is idempotent, the next holder redoes it
                log.warning("lock lost", extra={"event": name})
                return

    keeper = threading.Thread(target=renew, daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        with contextlib.suppress(Exception):
            lock.release()


def file_lock(file_hash: str, wait_s: float = 600) -> contextlib.AbstractContextManager[None]:
    """Serialise repair, rebalance and delete of one file across processes."""
    return renewed_lock(get_runtime().redis, f"occ:lock:file:{file_hash}", wait_s)


def _enqueue(task_name: str, *args: Any) -> None:
    from workers.tasks import storage as tasks

    getattr(tasks, task_name).apply_async(args=list(args))


def new_job(kind: str, **data: Any) -> str:
    job_id = uuid.uuid4().hex
    get_runtime().jobs.create(job_id, kind, Status.STORE_QUEUED, data=data)
    return job_id


def store_upload(
    stream: IO[bytes], name: str, r: int, expires_at: float | None = None
) -> dict[str, Any]:
    """Write every chunk to the write quorum, then queue the remaining copies; returns the seed's fields."""
    rt = get_runtime()
    w = write_quorum(r)
    manifest = rt.store.put(cast(BinaryIO, stream), name, r, quorum=w, expires_at=expires_at)
    job_id = None
    if w < r:
        job_id = new_job("replicate", file_hash=manifest.file_hash, replication_factor=r)
        _enqueue("replicate_file", job_id)
    log.info("stored upload", extra={"file_hash": manifest.file_hash, "job_id": job_id})
    return {
        "file_hash": manifest.file_hash,
        "file_name": manifest.name,
        "file_size": manifest.size,
        "chunks": len(manifest.chunks),
        "replication_factor": r,
        "durable_copies": w,
        "distribution": {cid: list(nodes) for cid, nodes in manifest.placement.items()},
        "job_id": job_id,
    }


def read_file(file_hash: str, start: int, end: int) -> Iterator[bytes]:
    """Verified bytes [start, end); a replica that fails verification queues a repair of the file."""
    rt = get_runtime()

    def on_bad(chunk_id: str, node_id: str) -> None:
        log.warning(
            "bad replica skipped", extra={"file_hash": file_hash, "event": f"{chunk_id}@{node_id}"}
        )
        try:
            _enqueue("repair_file", file_hash)
        except Exception:  # the scrub finds it later; a read must not fail for this
            log.warning("could not queue repair", extra={"file_hash": file_hash})

    return rt.store.read(file_hash, start, end, on_bad_replica=on_bad)


def summary(manifest: Manifest) -> dict[str, Any]:
    """The seed's /files entry, with live replica counts from presence on the nodes (no hashing)."""
    nodes = get_runtime().nodes
    counts = []
    for ref in {c.id: c for c in manifest.chunks}.values():
        counts.append(sum(1 for n in nodes if has_chunk(n, ref.id)))
    return {
        "file_hash": manifest.file_hash,
        "file_name": manifest.name,
        "file_size": manifest.size,
        "chunks": len(manifest.chunks),
        "replication_factor": manifest.replication_factor,
        "retrievable": all(c > 0 for c in counts),
        "min_replication": min(counts, default=0),
        "avg_replication": round(sum(counts) / len(counts), 3) if counts else 0.0,
        "created_at": manifest.created_at,
        "expires_at": manifest.expires_at,
    }


def list_files(offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    store = get_runtime().store
    return store.count_files(), [summary(m) for m in store.list_files(offset, limit)]


def verify_file(file_hash: str) -> dict[str, Any]:
    report = get_runtime().store.verify(file_hash)
    result: dict[str, Any] = report.to_dict()
    if (
        result.get("missing_chunks")
        or result.get("replication", {}).get("min", 0)
        < get_runtime().store.manifest(file_hash).replication_factor
    ):
        _enqueue("repair_file", file_hash)
    return result


def delete_file(file_hash: str) -> None:
    rt = get_runtime()
    rt.store.manifest(file_hash)  # 404 before anything changes
    with file_lock(file_hash, wait_s=10):
        rt.store.delete(file_hash, keep_recent_s=ORPHAN_CHUNK_AGE_S)
    log.info("deleted file", extra={"file_hash": file_hash})


def start_rebalance(file_hash: str, r: int) -> dict[str, Any]:
    get_runtime().store.manifest(file_hash)  # 404 before a job is created
    job_id = new_job("rebalance", file_hash=file_hash, replication_factor=r)
    _enqueue("rebalance_file", job_id)
    return {
        "success": True,
        "file_hash": file_hash,
        "replication_factor": r,
        "job_id": job_id,
        "status": int(Status.STORE_QUEUED),
        "status_url": f"/jobs/{job_id}",
    }
