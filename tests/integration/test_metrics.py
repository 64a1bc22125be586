"""/metrics on a real stack: gunicorn with 2 workers and a Celery worker sharing one Prometheus
multiprocess directory; real traffic, then the figures read with the Prometheus text parser."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
import requests

from occ_protocol.status import Status
from tests.fixtures.metrics import requests_by_route, scrape, series
from tests.fixtures.metrics import value as get
from tests.fixtures.services import Stack, all_chunk_files, wait_for

pytestmark = pytest.mark.integration

DOWNLOAD = "/download/<string:file_hash>"
JOB = "/jobs/<string:job_id>"


def served_by(stack: Stack, port: int) -> set[str]:
    """The gunicorn worker pids in the JSON access log."""
    assert stack.logs is not None
    lines = (stack.logs / f"gunicorn-{port}.log").read_text().splitlines()
    return {json.loads(line)["pid"] for line in lines if line.startswith('{"time"')}


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def test_metrics_count_the_traffic_of_every_process(stack: Stack) -> None:
    base = stack.start_gateway(workers=2)
    port = int(base.rsplit(":", 1)[1])
    before = requests_by_route(scrape(base))  # the fixture's /health polls while starting
    made: Counter[tuple[str, str, str]] = Counter({k: int(v) for k, v in before.items()})

    def call(method: str, path: str, route: str, **kwargs: Any) -> requests.Response:
        # a new connection per request: the two gunicorn workers share the traffic
        resp = requests.request(method, f"{base}{path}", timeout=60, **kwargs)
        made[(method, route, str(resp.status_code))] += 1
        return resp

    # /health until both gunicorn workers have answered (the counts below add up both)
    for _ in range(60):
        assert call("GET", "/health", "/health").status_code == 200
        if len(served_by(stack, port)) == 2:
            break
    assert len(served_by(stack, port)) == 2

    raw, form = payload(1, 300_000), payload(2, 150_000)  # 5 and 3 chunks of 64 KiB
    put = call("PUT", "/upload?name=raw.bin", "/upload", data=raw)
    post = call("POST", "/upload", "/upload", files={"file": ("form.bin", form)})
    assert put.status_code == post.status_code == 200, (put.text, post.text)
    uploads = [put.json(), post.json()]
    assert [u["file_hash"] for u in uploads] == [
        hashlib.sha256(raw).hexdigest(),
        hashlib.sha256(form).hexdigest(),
    ]
    jobs = [u["job_id"] for u in uploads]
    assert all(jobs)  # r=3 > write quorum 2: the last copy is a job for the Celery worker
    for job_id in jobs:
        wait_for(
            lambda j=job_id: call("GET", f"/jobs/{j}", JOB).json()["status"] == Status.DONE,
            60,
            f"job {job_id}",
        )

    full = call("GET", f"/download/{uploads[0]['file_hash']}", DOWNLOAD)
    ranged = call(
        "GET", f"/download/{uploads[1]['file_hash']}", DOWNLOAD, headers={"Range": "bytes=5-14"}
    )
    assert full.status_code == 200 and full.content == raw
    assert ranged.status_code == 206 and ranged.content == form[5:15]
    assert call("GET", f"/download/{'0' * 64}", DOWNLOAD).status_code == 404
    assert call("GET", "/no/such/path", "unmatched").status_code == 404

    # store figures and scrub counts come from the periodic tasks: run them as beat would,
    # after flipping one byte of one replica for the scrub to find and repair
    victim = sorted(all_chunk_files(stack.storage_dir))[0]
    blob = bytearray(victim.read_bytes())
    blob[0] ^= 0xFF
    victim.write_bytes(bytes(blob))
    stack.send_task("scrub_nodes")
    wait_for(
        lambda: get(scrape(base), "occ_celery_tasks_total", task="scrub_nodes", outcome="success"),
        60,
        "the scrub pass",
    )
    stack.send_task("check_health")  # refreshes the sketch (node census) and the report
    wait_for(
        lambda: get(scrape(base), "occ_celery_tasks_total", task="check_health", outcome="success"),
        60,
        "the health check",
    )

    table = scrape(base)
    # requests: exactly the ones made (and the fixture's), by URL rule and status, summed over
    # both workers
    counted = requests_by_route(table)
    assert counted == dict(made), (counted, made)
    for (method, route, status), n in made.items():
        labels = {"method": method, "route": route, "status": status}
        assert get(table, "occ_http_request_duration_seconds_count", **labels) == n
    # bytes: the files' bytes, not their multipart framing; the bytes the downloads returned
    assert get(table, "occ_upload_bytes_total") == len(raw) + len(form)
    assert get(table, "occ_download_bytes_total") == len(raw) + 10
    # jobs: two created queued (API), moved to storing and done (Celery worker)
    for status in (Status.STORE_QUEUED, Status.STORING, Status.DONE):
        assert get(table, "occ_jobs_total", status=str(int(status))) == 2, status
    # Celery task outcomes, counted in the worker's processes
    for task in ("replicate_file", "scrub_nodes", "check_health"):
        assert get(table, "occ_celery_tasks_total", task=task, outcome="success") >= 1, task
    assert get(table, "occ_celery_tasks_total", task="replicate_file", outcome="failure") == 0
    # scrub: the flipped replica found and rewritten
    assert get(table, "occ_scrub_corrupt_replicas_total") == 1
    assert get(table, "occ_scrub_repaired_copies_total") == 1
    assert get(table, "occ_scrub_lost_chunks_total") == 0
    # store: the census is exact (every replica file on disk), the estimates near the truth
    files = all_chunk_files(stack.storage_dir)
    replicas = series(table, "occ_store_replicas")
    assert len(replicas) == 5 and sum(replicas.values()) == len(files) == 3 * 8
    used = [p for d in ("chunks", "manifests") for p in stack.storage_dir.glob(f"node_*/{d}/**/*")]
    on_disk = sum(p.stat().st_size for p in used if p.is_file() and not p.name.startswith("."))
    assert sum(series(table, "occ_store_bytes").values()) == on_disk  # chunks and manifests
    assert abs(get(table, "occ_store_chunks") - 8) < 0.5  # 8 distinct chunks, N' = 10000
    assert get(table, "occ_store_chunks_below_target") < 0.5
    assert get(table, "occ_store_updated_timestamp_seconds") > 0
