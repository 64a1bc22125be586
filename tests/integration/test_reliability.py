"""Reliability catalogue (reliability.md §4) at the API level: rows 1, 2, 4, 5, 7 and 15.

Real redis-server, Celery worker processes and gunicorn (tests/fixtures/services.py). Every
random choice is seeded. Rows 10 and 16 are in test_storage_api.py, row 14 in test_schema.py.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.fixtures.chaos import record, scale
from tests.fixtures.services import (
    Stack,
    all_chunk_files,
    bad_chunk_files,
    stop,
    wait_for,
)

pytestmark = pytest.mark.integration

CHUNK = 65536  # CHUNK_SIZE of the test stack (tests/fixtures/services.py)
MiB = 1 << 20
R = 3  # REPLICATION_FACTOR of the test stack
NODES = [f"node_{i:03d}" for i in range(5)]  # NUM_NODES = 5


# helpers -----------------------------------------------------------------------------------


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(base: str, data: bytes, name: str = "f.bin", r: int = R) -> requests.Response:
    return requests.put(
        f"{base}/upload",
        params={"name": name, "replication_factor": str(r)},
        data=data,
        timeout=120,
    )


def post(base: str, data: bytes, name: str = "f.bin", r: int = R) -> requests.Response:
    return requests.post(
        f"{base}/upload",
        files={"file": (name, data)},
        data={"replication_factor": str(r)},
        timeout=120,
    )


def upload(base: str, data: bytes, i: int, r: int = R) -> requests.Response:
    """Raw PUT for even i, multipart POST for odd i: both upload paths get the load."""
    return (put if i % 2 == 0 else post)(base, data, f"file-{i}.bin", r)


def wait_job(base: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = requests.get(f"{base}/jobs/{job_id}", timeout=10).json()
        return job if job["final"] else None

    return wait_for(done, timeout, f"job {job_id}", 0.2)  # type: ignore[no-any-return]


def assert_error_shape(resp: requests.Response, code: int) -> dict[str, Any]:
    assert resp.status_code == code, (resp.status_code, resp.headers, resp.text[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["status"]
    assert "Traceback" not in resp.text
    return body  # type: ignore[no-any-return]


def verify(base: str, file_hash: str) -> dict[str, Any]:
    resp = requests.get(f"{base}/verify/{file_hash}", timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def assert_r_distinct(report: dict[str, Any], r: int = R) -> None:
    assert report["retrievable"] and report["missing_chunks"] == [], report["missing_chunks"]
    assert report["replication"]["min"] == r and report["replication"]["max"] == r
    for chunk in report["chunks"]:
        assert chunk["count"] == r and len(set(chunk["nodes"])) == r, chunk


def download_digest(base: str, file_hash: str) -> tuple[int, str, int]:
    """Stream a download: (status, sha256 hex, length), never the whole body in memory."""
    h = hashlib.sha256()
    n = 0
    with requests.get(f"{base}/download/{file_hash}", stream=True, timeout=120) as resp:
        for block in resp.iter_content(MiB):
            h.update(block)
            n += len(block)
        return resp.status_code, h.hexdigest(), n


def chunk_path(storage: Path, node: str, chunk_id: str) -> Path:
    return storage / node / "chunks" / chunk_id[:2] / chunk_id[2:4] / chunk_id


def flip_byte(path: Path, rng: np.random.Generator) -> None:
    size = path.stat().st_size
    pos = int(rng.integers(0, size))
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def log_messages(stack: Stack, prefix: str) -> list[str]:
    """The messages of the worker log (JSON lines, workers/logs.py) that start with `prefix`."""
    assert stack.logs is not None
    out = []
    for log in stack.logs.glob("worker-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if f'"{prefix}' in line:
                out.append(json.loads(line)["msg"])
    return out


def sweep_reports(stack: Stack) -> list[int]:
    return [int(m.split()[1]) for m in log_messages(stack, "removed ")]


def scrub_reports(stack: Stack) -> list[dict[str, int]]:
    """The `scrub pass {...}` reports of the worker log."""
    return [
        ast.literal_eval(m.removeprefix("scrub pass ")) for m in log_messages(stack, "scrub pass ")
    ]


@pytest.fixture
def gateway(stack: Stack) -> str:
    """gunicorn (2 workers) + one Celery worker process (concurrency 2)."""
    return stack.start_gateway()


# row 1 -------------------------------------------------------------------------------------


def test_row1_fifty_concurrent_uploads(gateway: str, stack: Stack) -> None:
    """50 concurrent uploads of 1-16 MiB: 0 lost, 0 5xx, every download matches, r distinct nodes."""
    n = scale(50, 150)
    sizes = [int(s) for s in np.random.default_rng(17).integers(MiB, 16 * MiB + 1, n)]
    # ~397 MiB in the short version, ~1.2 GiB under make chaos
    statuses: list[int] = []

    def one(i: int) -> dict[str, Any]:
        data = payload(1000 + i, sizes[i])
        resp = upload(gateway, data, i)
        statuses.append(resp.status_code)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return {"sha": sha(data), "size": len(data), **body}

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(n)))
    t_upload = time.monotonic() - started
    record("repetitions", f"{n} uploads, {sum(sizes) / MiB:.0f} MiB")
    record("5xx", sum(s >= 500 for s in statuses))
    assert statuses == [200] * n
    for res in results:
        assert res["file_hash"] == res["sha"] and res["file_size"] == res["size"]
        assert res["job_id"]  # W = 2 < r = 3: the third copy is a background job
    for res in results:
        job = wait_job(gateway, res["job_id"], timeout=300)
        assert job["status"] == 400, job
    t_jobs = time.monotonic() - started

    def check(res: dict[str, Any]) -> None:
        report = verify(gateway, res["file_hash"])
        assert sum(c["size"] for c in report["chunks"]) == res["size"]
        assert_r_distinct(report)
        status, digest, n = download_digest(gateway, res["file_hash"])
        assert (status, digest, n) == (200, res["sha"], res["size"])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, results))
    listing = requests.get(f"{gateway}/files", timeout=30).json()
    assert listing["total_files"] == n
    record("lost", 0)
    record("corrupt", 0)
    assert all(f["min_replication"] == R for f in listing["files"])
    print(
        f"\nrow 1: {sum(sizes) / MiB:.0f} MiB uploaded in {t_upload:.1f}s, "
        f"replicated by {t_jobs:.1f}s, verified+downloaded by {time.monotonic() - started:.1f}s"
    )


# row 2 -------------------------------------------------------------------------------------


def test_row2_read_right_after_ack(gateway: str) -> None:
    """200 uploads each read back the moment it is acknowledged: 100% correct bytes."""
    rng = np.random.default_rng(2)
    n = scale(200, 1000)
    sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1] + [
        int(s) for s in rng.integers(1, 5 * CHUNK, n - 5)
    ]

    def one(i: int) -> bool:
        data = payload(20_000 + i, sizes[i])
        resp = upload(gateway, data, i)
        assert resp.status_code == 200, resp.text
        got = requests.get(f"{gateway}/download/{resp.json()['file_hash']}", timeout=30)
        assert got.status_code == 200, got.text
        return got.content == data

    with ThreadPoolExecutor(4) as pool:
        correct = sum(pool.map(one, range(n)))
    record("repetitions", f"{n} upload-then-read")
    record("corrupt", n - correct)
    assert correct == n


# rows 4 and 5 ------------------------------------------------------------------------------


def test_rows4_5_corrupt_replicas_never_served_and_repaired(stack: Stack) -> None:
    """Flipped and truncated replicas: reads stay correct, the read queues a repair, and one
    scrub pass repairs every bad replica (from a copy that verifies) back to r distinct nodes."""
    stack.env["SCRUB_BUDGET_BYTES"] = str(1 << 30)  # one pass covers everything stored
    base = stack.start_gateway()
    storage = stack.storage_dir
    rng = np.random.default_rng(45)

    # F1, read while corrupt (rows 4 and 5): the first-listed replica of 8 chunks is bad
    data1 = payload(45, 60 * CHUNK + 1234)
    body1 = put(base, data1, "f1.bin").json()
    assert wait_job(base, body1["job_id"])["status"] == 400
    assert_r_distinct(verify(base, body1["file_hash"]))
    ids1 = [c["chunk_hash"] for c in verify(base, body1["file_hash"])["chunks"]]
    picked = [int(i) for i in rng.choice(len(ids1), 8, replace=False)]
    bad1: list[tuple[str, str]] = []
    for k, idx in enumerate(picked):
        cid = ids1[idx]
        first = body1["distribution"][cid][0]  # the replica a read tries first
        path = chunk_path(storage, first, cid)
        if k % 2 == 0:
            flip_byte(path, rng)
        else:
            truncate(path)
        bad1.append((cid, first))
    assert len(bad_chunk_files(storage)) == 8

    got = requests.get(f"{base}/download/{body1['file_hash']}", timeout=60)
    assert got.status_code == 200 and got.content == data1
    ranges = [(idx * CHUNK - 7, idx * CHUNK + 9) for idx in picked if idx > 0]
    ranges += [(idx * CHUNK + 3, idx * CHUNK + CHUNK // 2) for idx in picked]
    for _ in range(20):
        a, b = sorted(int(x) for x in rng.integers(0, len(data1), 2))
        ranges.append((a, b))
    for a, b in ranges:
        part = requests.get(
            f"{base}/download/{body1['file_hash']}",
            headers={"Range": f"bytes={a}-{b}"},
            timeout=30,
        )
        assert part.status_code == 206 and part.content == data1[a : b + 1], (a, b)

    # the read queued a repair: the bad replicas are rewritten in place from verified copies
    def f1_repaired() -> bool:
        return all(
            chunk_path(storage, n, c).is_file() and sha(chunk_path(storage, n, c).read_bytes()) == c
            for c, n in bad1
        )

    wait_for(f1_repaired, 60, "read-triggered repair of F1")
    assert bad_chunk_files(storage) == []

    # F2, repaired by one scrub pass (row 4): 1% of replicas flipped, another 1% truncated
    data2 = payload(46, 200 * CHUNK)
    body2 = put(base, data2, "f2.bin").json()
    assert wait_job(base, body2["job_id"])["status"] == 400
    ids2 = list(body2["distribution"])
    assert len(ids2) == 200  # 600 replicas
    bad2: list[tuple[str, str]] = []
    for k, idx in enumerate(rng.choice(len(ids2), 12, replace=False)):
        cid = ids2[int(idx)]
        node = str(rng.choice(body2["distribution"][cid]))
        path = chunk_path(storage, node, cid)
        assert sha(path.read_bytes()) == cid
        if k < 6:
            flip_byte(path, rng)
        else:
            truncate(path)
        bad2.append((cid, node))
    assert len(bad_chunk_files(storage)) == 12
    # no read or verify of F2 before the scrub: only the scrub can find these
    stack.send_task("scrub_nodes")
    wait_for(lambda: scrub_reports(stack), 120, "scrub pass")
    (report,) = scrub_reports(stack)
    assert report["bad"] == 12 and report["repaired"] == 12 and report["lost"] == 0, report
    for cid, node in bad2:  # rewritten in place, and verifies now
        assert sha(chunk_path(storage, node, cid).read_bytes()) == cid
    assert bad_chunk_files(storage) == []
    rep2 = verify(base, body2["file_hash"])
    assert_r_distinct(rep2)
    got2 = requests.get(f"{base}/download/{body2['file_hash']}", timeout=60)
    assert got2.status_code == 200 and got2.content == data2


# row 7 -------------------------------------------------------------------------------------


def test_row7_lose_two_of_five_nodes(gateway: str, stack: Stack) -> None:
    """r = 3, two node directories lost at once: 0 data loss. A chunk then deleted everywhere
    is reported by /verify and /files, and its download is never a silent truncated 200."""
    rng = np.random.default_rng(7)
    files = []
    for i in range(10):
        data = payload(700 + i, int(rng.integers(1, 40 * CHUNK)))
        resp = upload(gateway, data, i)
        assert resp.status_code == 200, resp.text
        files.append((data, resp.json()))
    for _, body in files:
        if body["job_id"]:
            assert wait_job(gateway, body["job_id"])["status"] == 400
    lost = [str(n) for n in rng.choice(NODES, 2, replace=False)]
    for node in lost:
        shutil.rmtree(stack.storage_dir / node)
    for data, body in files:
        got = requests.get(f"{gateway}/download/{body['file_hash']}", timeout=60)
        assert got.status_code == 200 and got.content == data
        report = verify(gateway, body["file_hash"])
        assert report["retrievable"] and report["missing_chunks"] == []
        assert report["replication"]["min"] >= 1

    # a chunk with no surviving replica: stop the worker so no repair races the deletion
    worker = next(p for p in stack.procs if "celery" in str(p.args))
    stop(worker)
    data, body = max(files, key=lambda f: f[1]["chunks"])
    assert body["chunks"] >= 3
    cid = verify(gateway, body["file_hash"])["chunks"][1]["chunk_hash"]
    for node in NODES:
        chunk_path(stack.storage_dir, node, cid).unlink(missing_ok=True)
    report = verify(gateway, body["file_hash"])
    assert report["missing_chunks"] == [cid] and report["retrievable"] is False
    assert report["replication"]["min"] == 0
    assert report["chunks"][1]["count"] == 0
    listing = requests.get(f"{gateway}/files", timeout=30).json()
    summary = next(f for f in listing["files"] if f["file_hash"] == body["file_hash"])
    assert summary["retrievable"] is False and summary["min_replication"] == 0

    # the missing chunk is the second of the body: headers (200, full Content-Length) are out
    # when it is reached, so the server aborts the connection: the client sees a short body
    for headers, status in (({}, 200), ({"Range": f"bytes=10-{2 * CHUNK + 5}"}, 206)):
        with requests.get(
            f"{gateway}/download/{body['file_hash']}", headers=headers, stream=True, timeout=60
        ) as resp:
            assert resp.status_code == status
            expected = int(resp.headers["Content-Length"])
            received = bytearray()
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                for block in resp.iter_content(CHUNK):
                    received += block
        assert len(received) < expected
        offset = 10 if headers else 0
        assert bytes(received) == data[offset : offset + len(received)]
    # the other files are untouched
    for other, ob in files:
        if ob["file_hash"] != body["file_hash"]:
            assert download_digest(gateway, ob["file_hash"])[1] == sha(other)


def test_row7_unreadable_first_chunk_is_a_clean_503(stack: Stack) -> None:
    """When the first chunk of the requested bytes has no readable replica nothing is sent
    yet: the answer must be the one error shape (503, Retry-After), not a 500 page."""
    base = stack.start_gateway(worker=False)
    data = payload(77, 6 * CHUNK + 5)
    body = put(base, data, "lost.bin").json()
    ids = [c["chunk_hash"] for c in verify(base, body["file_hash"])["chunks"]]
    for cid in (ids[0], ids[3]):
        for node in NODES:
            chunk_path(stack.storage_dir, node, cid).unlink(missing_ok=True)
    assert verify(base, body["file_hash"])["missing_chunks"] == [ids[0], ids[3]]
    for headers in ({}, {"Range": f"bytes={3 * CHUNK + 1}-{4 * CHUNK + 1}"}):
        resp = requests.get(f"{base}/download/{body['file_hash']}", headers=headers, timeout=30)
        assert_error_shape(resp, 503)
        assert resp.headers.get("Retry-After")


# row 15 ------------------------------------------------------------------------------------

LIMIT = 300_007  # MAX_UPLOAD_SIZE of the body-limit test: a few chunks, odd


def _multipart(size: int) -> tuple[bytes, bytes, int, str]:
    """(head, tail, file bytes, content type) of a multipart body of exactly `size` bytes."""
    boundary = "reliabilityboundary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, size - len(head) - len(tail), f"multipart/form-data; boundary={boundary}"


def _blocks(data: bytes, size: int = 50_000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_row15_body_limit_plus_one_is_413(stack: Stack) -> None:
    """MAX_UPLOAD_SIZE + 1 byte: 413 in the error shape with Content-Length and chunked, raw
    PUT and multipart POST; nothing written. Exactly the limit passes."""
    stack.env["MAX_UPLOAD_SIZE"] = str(LIMIT)
    base = stack.start_gateway(worker=False)
    over = payload(15, LIMIT + 1)
    url = f"{base}/upload?name=over.bin"
    # raw PUT: Content-Length, then chunked (a generator body has no length)
    assert_error_shape(requests.put(url, data=over, timeout=60), 413)
    chunked = requests.put(url, data=_blocks(over), timeout=60)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error_shape(chunked, 413)
    # multipart POST whose body is LIMIT + 1 bytes
    head, tail, n, ctype = _multipart(LIMIT + 1)
    form = head + over[:n] + tail
    assert len(form) == LIMIT + 1
    hdrs = {"Content-Type": ctype}
    assert_error_shape(requests.post(f"{base}/upload", data=form, headers=hdrs, timeout=60), 413)
    chunked = requests.post(f"{base}/upload", data=_blocks(form), headers=hdrs, timeout=60)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error_shape(chunked, 413)
    # nothing written, nothing listed, nothing left in staging
    assert all_chunk_files(stack.storage_dir) == []
    assert requests.get(f"{base}/files", timeout=10).json()["total_files"] == 0
    staging = stack.storage_dir / "staging"
    assert not [p for p in staging.rglob("*") if p.is_file()]
    # the limit itself passes, both ways
    ok = requests.put(url, data=_blocks(over[:LIMIT]), timeout=60)
    assert ok.status_code == 200 and ok.json()["file_hash"] == sha(over[:LIMIT]), ok.text
    head, tail, n, ctype = _multipart(LIMIT)
    ok = requests.post(
        f"{base}/upload", data=head + over[:n] + tail, headers={"Content-Type": ctype}, timeout=60
    )
    assert ok.status_code == 200 and ok.json()["file_hash"] == sha(over[:n]), ok.text


BIG_CHUNK = 262144  # the default CHUNK_SIZE (workers/settings.py)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


class GeneratedBody:
    """A 1 GiB body generated block by block (seeded), hashed as it is produced."""

    def __init__(self, size: int, seed: int, block: int = MiB) -> None:
        self.size, self.block = size, block
        self.rng = np.random.default_rng(seed)
        self.digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        while left > 0:
            data = self.rng.bytes(min(self.block, left))
            self.digest.update(data)
            left -= len(data)
            yield data


def test_row15_one_gib_upload_in_bounded_memory(stack: Stack) -> None:
    """A 1 GiB raw PUT (streamed, never in client memory) succeeds; every gunicorn worker's
    RSS stays below its baseline + 64 MiB during the upload; the download's SHA-256 matches.

    Runs with the production default CHUNK_SIZE (256 KiB): with the stack's 64 KiB the 32,768
    chunk files alone take a minute or more to delete on this disk."""
    stack.env["CHUNK_SIZE"] = str(BIG_CHUNK)
    base = stack.start_gateway(worker=False)
    master = next(p for p in stack.procs if "gunicorn" in str(p.args))
    try:
        # warm both workers up (imports, thread pools) before the baseline
        warm = payload(151, 3 * BIG_CHUNK)
        for i in range(6):
            fh = put(base, warm, f"warm{i}.bin").json()["file_hash"]
            assert requests.get(f"{base}/download/{fh}", timeout=30).content == warm
        workers = _children(master.pid)
        assert len(workers) == 2
        baseline = {pid: _rss_kib(pid) for pid in workers}
        peak = dict(baseline)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in workers:
                    peak[pid] = max(peak[pid], _rss_kib(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        body = GeneratedBody(1 << 30, seed=1515)
        started = time.monotonic()
        try:
            resp = requests.put(f"{base}/upload?name=big.bin", data=iter(body), timeout=900)
        finally:
            done.set()
            sampler.join()
        elapsed = time.monotonic() - started
        assert resp.status_code == 200, resp.text
        result = resp.json()
        assert result["file_size"] == 1 << 30 and result["chunks"] == (1 << 30) // BIG_CHUNK
        assert result["file_hash"] == body.digest.hexdigest()
        growth_mib = {pid: (peak[pid] - baseline[pid]) / 1024 for pid in workers}
        print(
            f"\nrow 15: 1 GiB PUT in {elapsed:.1f}s ({1024 / elapsed:.0f} MiB/s); "
            f"worker RSS baseline {[round(baseline[p] / 1024) for p in workers]} MiB, "
            f"growth {[round(growth_mib[p], 1) for p in workers]} MiB"
        )
        assert max(growth_mib.values()) < 64, growth_mib
        started = time.monotonic()
        status, digest, n = download_digest(base, result["file_hash"])
        print(f"row 15: 1 GiB download in {time.monotonic() - started:.1f}s")
        assert (status, digest, n) == (200, result["file_hash"], 1 << 30)
    finally:
        t = time.monotonic()
        shutil.rmtree(stack.storage_dir, ignore_errors=True)  # 2 GiB: not kept with the tmp dirs
        print(f"row 15: storage removed in {time.monotonic() - t:.1f}s")


# aborted uploads ------------------------------------------------------------------------------


def test_upload_cut_off_midway_leaves_chunks_the_orphan_sweep_removes(
    gateway: str, stack: Stack
) -> None:
    """A client that drops a raw PUT halfway leaves chunks no manifest references; the worker's
    sweep removes exactly those, and the files stored around it stay whole at r copies."""
    data = payload(60, 40 * CHUNK)
    body = put(gateway, data, "kept.bin").json()
    assert wait_job(gateway, body["job_id"])["status"] == 400
    kept = {p for p in all_chunk_files(stack.storage_dir)}
    port = int(gateway.rsplit(":", 1)[1])
    part = b"--cut\r\nContent-Disposition: form-data; name=file; filename=cut.bin\r\n\r\n"
    cut_off = (  # each sends about half of what its headers announce, then hangs up
        b"PUT /upload?name=cut.bin HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (200 * CHUNK)
        + data[: 5 * CHUNK]
        + payload(61, 95 * CHUNK),
        b"POST /upload HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=cut\r\n"
        + b"Content-Length: %d\r\n\r\n" % (60 * CHUNK)
        + part
        + payload(62, 30 * CHUNK),
        b"PUT /upload?name=cut2.bin HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % (60 * CHUNK)
        + payload(63, 30 * CHUNK),
    )
    for request in cut_off:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)

    def orphans() -> set[Path]:
        return set(all_chunk_files(stack.storage_dir)) - kept

    wait_for(lambda: len(orphans()) >= 20, 60, "chunks of the cut-off upload on disk")
    time.sleep(2.0)  # the request has failed and stopped writing
    found = orphans()
    assert requests.get(f"{gateway}/files", timeout=5).json()["total_files"] == 1
    stack.send_task("sweep_orphan_chunks", older_than_s=0)
    wait_for(lambda: sweep_reports(stack), 60, "orphan sweep")
    assert sweep_reports(stack) == [len(found)]
    assert orphans() == set() and set(all_chunk_files(stack.storage_dir)) == kept
    assert_r_distinct(verify(gateway, body["file_hash"]))
    assert download_digest(gateway, body["file_hash"]) == (200, sha(data), len(data))
