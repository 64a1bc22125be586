"""Two gateway+worker "hosts" on one machine: separate processes and STORAGE_DIR roots, sharing
only Redis and five buckets on a real Ceph RGW."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.fixtures.ceph import CephS3
from tests.fixtures.services import RedisServer, Stack, free_port, stack_env, wait_for

pytestmark = pytest.mark.integration

CHUNK = 65536


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def job(base: str, job_id: str) -> dict[str, Any]:
    return requests.get(f"{base}/jobs/{job_id}", timeout=5).json()  # type: ignore[no-any-return]


def replication(base: str, fh: str) -> tuple[int, int]:
    rep = requests.get(f"{base}/verify/{fh}", timeout=120).json()
    return rep["replication"]["min"], rep["replication"]["max"]


@pytest.fixture
def hosts(
    redis_server: RedisServer, ceph_s3: CephS3, tmp_path: Path
) -> Iterator[tuple[Stack, Stack]]:
    redis_server.client().flushall()
    nodes = [ceph_s3.node_entry(f"rgw-{i}", ceph_s3.new_bucket(f"two{i}")) for i in range(5)]
    key = tmp_path / "secrets" / "sketch.key"  # the network's PRF key, given to every host
    key.parent.mkdir()
    key.write_bytes(os.urandom(32))
    out = []
    for name in ("a", "b"):
        (tmp_path / name / "logs").mkdir(parents=True)
        env = stack_env(
            redis_server.url,
            tmp_path / name / "storage",
            NODES_JSON=json.dumps({"nodes": nodes}),
            SKETCH_KEY_FILE=str(key),
            TASK_TIME_LIMIT="90",
            TASK_SOFT_TIME_LIMIT="80",
            CELERY_VISIBILITY_TIMEOUT="60",
        )
        out.append(Stack(env, tmp_path / name / "storage", logs=tmp_path / name / "logs"))
    try:
        yield out[0], out[1]
    finally:
        for s in out:
            s.stop_all()
        redis_server.client().flushall()


def gunicorn(host: Stack) -> str:
    port = free_port()
    host.start_gunicorn(port)
    return f"http://127.0.0.1:{port}"


def test_two_hosts_share_only_redis_and_s3(hosts: tuple[Stack, Stack]) -> None:
    a, b = hosts
    worker_a = a.start_worker("host-a", concurrency=1)
    base_a = gunicorn(a)
    b.start_worker("host-b", concurrency=1)
    base_b = gunicorn(b)

    # accepted by A, downloaded through B
    data = payload(1, 20 * CHUNK + 5)
    body = requests.post(f"{base_a}/upload", files={"file": ("f", data)}, timeout=60).json()
    wait_for(lambda: job(base_a, body["job_id"])["final"], 90, "replication")
    assert requests.get(f"{base_b}/download/{body['file_hash']}", timeout=60).content == data
    assert replication(base_b, body["file_hash"]) == (3, 3)
    assert not list(Path(a.storage_dir).glob("node_*")) and not list(
        Path(b.storage_dir).glob("node_*")
    )

    # a rebalance enqueued on A, executed by B's worker (A's is stopped)
    os.killpg(worker_a.pid, signal.SIGTERM)
    worker_a.wait(30)
    resp = requests.post(
        f"{base_a}/rebalance/{body['file_hash']}", json={"replication_factor": 4}, timeout=10
    )
    assert resp.status_code == 202, resp.text
    wait_for(lambda: job(base_a, resp.json()["job_id"])["final"], 90, "rebalance by host B")
    assert job(base_a, resp.json()["job_id"])["status"] == 400
    assert replication(base_a, body["file_hash"]) == (4, 4)
    assert "rebalance_file" in (b.logs / "worker-host-b.log").read_text()  # type: ignore[operator]

    # host A's worker killed mid-replication: B's worker finishes the job, nothing is lost
    b_proc = next(p for p in b.procs if "celery" in str(p.args))
    os.killpg(b_proc.pid, signal.SIGTERM)  # B's worker is away while A takes the job
    b_proc.wait(30)
    victim = a.start_worker("host-a2", concurrency=1)
    big = payload(2, 80 * CHUNK)
    up = requests.post(f"{base_a}/upload", files={"file": ("big", big)}, timeout=120).json()
    wait_for(lambda: job(base_a, up["job_id"])["status"] >= 301, 60, "replication started", 0.02)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    b.start_worker("host-b2", concurrency=1)  # restores the unacknowledged task and runs it
    deadline = time.monotonic() + 300
    while not job(base_b, up["job_id"])["final"] and time.monotonic() < deadline:
        time.sleep(1)
    final = job(base_b, up["job_id"])
    assert final["status"] == 400, final
    assert requests.get(f"{base_b}/download/{up['file_hash']}", timeout=120).content == big
    assert replication(base_b, up["file_hash"]) == (3, 3)
