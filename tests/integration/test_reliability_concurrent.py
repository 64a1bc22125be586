"""Reliability catalogue rows 6 and 8: a node lost during uploads, and repair and rebalance
running while uploads go on (reliability.md §4).

Real redis-server, Celery worker processes and gunicorn; every random choice is seeded.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests

from tests.fixtures.chaos import record, scale
from tests.fixtures.services import Stack, wait_for
from tests.integration.test_reliability import (
    CHUNK,
    NODES,
    R,
    assert_r_distinct,
    download_digest,
    payload,
    sha,
    upload,
    verify,
    wait_job,
)

pytestmark = pytest.mark.integration


def all_at_r(base: str, files: list[dict[str, Any]]) -> bool:
    """True when every file's every chunk has exactly its target count on distinct nodes."""
    for f in files:
        report = verify(base, f["file_hash"])
        if report["missing_chunks"] or any(
            c["count"] != f["r"] or len(set(c["nodes"])) != c["count"] for c in report["chunks"]
        ):
            return False
    return True


def test_row6_node_directory_deleted_during_uploads(stack: Stack) -> None:
    """One of 5 node directories deleted while 24 uploads run: every acknowledged upload reads
    back 100% correct, nothing answers 5xx, and repair restores r distinct copies of every chunk."""
    base = stack.start_gateway()
    rng = np.random.default_rng(606)
    n = scale(24, 96)
    sizes = [int(s) for s in rng.integers(CHUNK, 40 * CHUNK, n)]
    victim = str(rng.choice(NODES))
    started = threading.Event()
    statuses: list[int] = []

    def one(i: int) -> dict[str, Any] | None:
        data = payload(6000 + i, sizes[i])
        if i == 4:
            started.set()
        resp = upload(base, data, i)
        statuses.append(resp.status_code)
        if resp.status_code != 200:
            return None
        return {"data": data, "r": R, **resp.json()}

    def kill_node() -> None:
        started.wait(30)
        time.sleep(0.05)
        shutil.rmtree(stack.storage_dir / victim, ignore_errors=True)

    killer = threading.Thread(target=kill_node)
    killer.start()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(n)))
    killer.join()
    assert all(s < 500 for s in statuses), statuses
    acked = [r for r in results if r is not None]
    record("repetitions", f"{n} uploads")
    record("faults", f"{victim} deleted during the uploads")
    record("5xx", sum(s >= 500 for s in statuses))
    assert len(acked) == n, statuses  # the other four nodes take the writes
    for f in acked:
        if f["job_id"]:
            assert wait_job(base, f["job_id"], timeout=180)["status"] == 400
    # reads: 100% correct bytes, whole and ranged
    for f in acked:
        assert download_digest(base, f["file_hash"]) == (200, sha(f["data"]), len(f["data"]))
        lo, hi = len(f["data"]) // 3, len(f["data"]) // 3 + CHUNK + 17
        got = requests.get(
            f"{base}/download/{f['file_hash']}", headers={"Range": f"bytes={lo}-{hi}"}, timeout=60
        )
        assert got.status_code == 206 and got.content == f["data"][lo : hi + 1]

    # the node directory is gone for good: one repair sweep brings every chunk back to r
    shutil.rmtree(stack.storage_dir / victim, ignore_errors=True)
    stack.send_task("repair_all")
    wait_for(lambda: all_at_r(base, acked), 240, "every chunk back at r", 1.0)
    for f in acked:
        assert_r_distinct(verify(base, f["file_hash"]))
    record("lost", 0)
    record("corrupt", 0)


def test_row8_repair_and_rebalance_concurrent_with_uploads(stack: Stack) -> None:
    """Repair (after replicas were deleted) and rebalances to r = 4 and back to 2 run while new
    uploads arrive: at the end every chunk has exactly its file's target r, never two replicas on
    one node, and every file downloads with its SHA-256."""
    base = stack.start_gateway()
    stack.start_worker("w2")  # two worker processes take the jobs concurrently
    rng = np.random.default_rng(808)
    first: list[dict[str, Any]] = []
    for i in range(12):
        data = payload(8000 + i, int(rng.integers(CHUNK, 24 * CHUNK)))
        resp = upload(base, data, i)
        assert resp.status_code == 200, resp.text
        first.append({"data": data, "r": R, **resp.json()})
    for f in first:
        if f["job_id"]:
            assert wait_job(base, f["job_id"])["status"] == 400
    # damage: delete one replica of every chunk of the first six files
    for f in first[:6]:
        for c in verify(base, f["file_hash"])["chunks"]:
            node = str(rng.choice(c["nodes"]))
            path = stack.storage_dir / node / "chunks" / c["chunk_hash"][:2] / c["chunk_hash"][2:4]
            (path / c["chunk_hash"]).unlink()

    later: list[dict[str, Any]] = []
    errors: list[str] = []

    def uploads() -> None:
        for i in range(12, 12 + scale(16, 64)):
            data = payload(8000 + i, int(rng_up.integers(CHUNK, 24 * CHUNK)))
            resp = upload(base, data, i)
            if resp.status_code != 200:
                errors.append(f"upload {i}: {resp.status_code} {resp.text[:200]}")
                continue
            later.append({"data": data, "r": R, **resp.json()})

    rng_up = np.random.default_rng(809)
    uploader = threading.Thread(target=uploads)
    uploader.start()
    stack.send_task("repair_all")
    rebalance_jobs = []
    targets = {f["file_hash"]: 4 if k % 2 == 0 else 2 for k, f in enumerate(first[3:9])}
    for file_hash, r in targets.items():
        for _ in range(20):  # 409 while a repair holds the file: retry, as the API says
            resp = requests.post(
                f"{base}/rebalance/{file_hash}", json={"replication_factor": r}, timeout=30
            )
            if resp.status_code != 409:
                break
            time.sleep(0.5)
        assert resp.status_code in (200, 202), resp.text
        rebalance_jobs.append(resp.json()["job_id"])
    stack.send_task("repair_all")
    uploader.join()
    record("repetitions", f"{len(first)} stored + {len(later) + len(errors)} concurrent uploads")
    record("faults", "1 replica of every chunk of 6 files deleted; 6 rebalances (to 4 and 2)")
    assert errors == []
    for job_id in rebalance_jobs:
        assert wait_job(base, job_id, timeout=180)["status"] == 400
    for f in later:
        if f["job_id"]:
            assert wait_job(base, f["job_id"], timeout=180)["status"] == 400
    for f in first:
        f["r"] = targets.get(f["file_hash"], R)
    everything = first + later
    stack.send_task("repair_all")
    wait_for(lambda: all_at_r(base, everything), 240, "every chunk at its target r", 1.0)
    for f in everything:
        report = verify(base, f["file_hash"])
        for c in report["chunks"]:
            assert c["count"] == f["r"] and len(set(c["nodes"])) == f["r"], c
        assert download_digest(base, f["file_hash"]) == (200, sha(f["data"]), len(f["data"]))
    record("lost", 0)
    record("corrupt", 0)
