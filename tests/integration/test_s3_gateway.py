"""The gateway over 5 nodes = 3 local directories + 2 buckets on a real Ceph RGW, r = 3: the seed's
curl session, a flipped byte in RGW repaired, and a radosgw outage during 20 uploads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.fixtures.ceph import CephS3
from tests.fixtures.services import Stack, wait_for

pytestmark = pytest.mark.integration

CHUNK = 65536
LOCAL = ["node_000", "node_001", "node_002"]


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.fixture
def s3_stack(stack: Stack, ceph_s3: CephS3) -> Stack:
    nodes: list[dict[str, Any]] = [{"id": n, "kind": "local", "path": n} for n in LOCAL]
    nodes += [ceph_s3.node_entry(f"rgw-{i}", ceph_s3.new_bucket(f"occ{i}")) for i in range(2)]
    stack.env["NODES_JSON"] = json.dumps({"nodes": nodes})
    return stack


def curl(*args: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def wait_job(base: str, job_id: str | None, timeout: float = 90) -> None:
    if not job_id:
        return

    def done() -> bool:
        job = requests.get(f"{base}/jobs/{job_id}", timeout=5).json()
        return bool(job["final"])

    wait_for(done, timeout, f"job {job_id}")


def verify(base: str, fh: str) -> dict[str, Any]:
    resp = requests.get(f"{base}/verify/{fh}", timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def assert_r_distinct(report: dict[str, Any], r: int = 3) -> None:
    assert report["retrievable"] and report["missing_chunks"] == []
    for chunk in report["chunks"]:
        assert chunk["count"] == r and len(set(chunk["nodes"])) == r, chunk


def test_seed_curl_session_and_flipped_byte_in_rgw(
    s3_stack: Stack, ceph_s3: CephS3, tmp_path: Path
) -> None:
    base = s3_stack.start_gateway()
    health = json.loads(curl(f"{base}/health"))
    assert health["ready"] and {s["kind"] for s in health["node_states"]} == {"local", "s3"}
    assert all(s["reachable"] for s in health["node_states"])
    data = payload(1, 30 * CHUNK + 17)
    src = tmp_path / "test.txt"
    src.write_bytes(data)
    body = json.loads(curl("-X", "POST", "-F", f"file=@{src}", f"{base}/upload"))
    fh = body["file_hash"]
    assert fh == hashlib.sha256(data).hexdigest()
    wait_job(base, body.get("job_id"))
    listing = json.loads(curl(f"{base}/files"))
    assert any(f["file_hash"] == fh for f in listing["files"])
    out = tmp_path / "out.bin"
    curl("-o", str(out), f"{base}/download/{fh}")
    assert out.read_bytes() == data
    report = verify(base, fh)
    assert_r_distinct(report)
    on_rgw = [c for c in report["chunks"] if any(n.startswith("rgw") for n in c["nodes"])]
    assert on_rgw, "rendezvous placed no chunk on the RGW buckets"
    status = json.loads(curl(f"{base}/status?refresh=1"))
    kinds = {n["node_id"]: (n["kind"], n["reachable"]) for n in status["nodes"]}
    assert kinds["rgw-0"] == ("s3", True) and kinds["node_000"] == ("local", True)
    rebalanced = json.loads(
        curl(
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"replication_factor": 4}',
            f"{base}/rebalance/{fh}",
        )
    )
    wait_job(base, rebalanced["job_id"])
    assert_r_distinct(verify(base, fh), 4)

    # a flipped byte in an RGW object: detected on read, never served, repaired
    chunk = on_rgw[0]
    nid = next(n for n in chunk["nodes"] if n.startswith("rgw"))
    bucket = next(
        n["bucket"] for n in json.loads(s3_stack.env["NODES_JSON"])["nodes"] if n["id"] == nid
    )
    s3 = ceph_s3.client()
    key = f"chunks/{chunk['chunk_hash']}"
    raw = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    raw[5] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(raw))
    report = verify(base, fh)  # verify reads every replica: the bad one is reported
    assert [chunk["chunk_hash"], nid] in report["bad_replicas"]
    for _ in range(3):  # every download is whole and correct whichever replica it tries first
        assert requests.get(f"{base}/download/{fh}", timeout=60).content == data
    s3_stack.send_task("repair_file", file_hash=fh)

    def repaired() -> bool:
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return hashlib.sha256(got).hexdigest() == chunk["chunk_hash"]

    wait_for(repaired, 60, "repair of the RGW replica")
    assert_r_distinct(verify(base, fh), 4)


def local_copy_everywhere(storage: Path, report: dict[str, Any]) -> bool:
    """True if every chunk of the file has a replica in a local directory (reachable without RGW)."""
    return all(
        any(
            (
                storage
                / n
                / "chunks"
                / c["chunk_hash"][:2]
                / c["chunk_hash"][2:4]
                / c["chunk_hash"]
            ).exists()
            for n in LOCAL
        )
        for c in report["chunks"]
    )


def test_radosgw_outage_during_twenty_uploads(s3_stack: Stack, ceph_s3: CephS3) -> None:
    """Reliability rows 6 and 7 on S3 nodes: radosgw killed while 20 uploads run."""
    base = s3_stack.start_gateway()
    before = []
    for i in range(5):
        data = payload(100 + i, (i + 3) * CHUNK)
        resp = requests.post(f"{base}/upload", files={"file": ("b", data)}, timeout=60)
        assert resp.status_code == 200, resp.text
        wait_job(base, resp.json().get("job_id"))
        before.append((data, resp.json()["file_hash"]))
    datas = [payload(200 + i, (i % 7 + 2) * CHUNK + i) for i in range(20)]
    started = threading.Event()

    def put(data: bytes) -> requests.Response:
        started.set()
        return requests.post(f"{base}/upload", files={"file": ("f", data)}, timeout=120)

    try:
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(put, d) for d in datas]
            started.wait(10)
            time.sleep(0.3)
            ceph_s3.stop_rgw()
            results = [f.result() for f in futures]
        acked = [(d, r.json()) for d, r in zip(datas, results, strict=True) if r.status_code == 200]
        assert all(r.status_code in (200, 503) for r in results), [r.text for r in results]
        assert len(acked) >= 10, f"only {len(acked)} of 20 uploads acknowledged during the outage"
        # reads while radosgw is down: 0 5xx for every file with a reachable copy
        reachable = 0
        for data, fh in before + [(d, b["file_hash"]) for d, b in acked]:
            report = requests.get(f"{base}/verify/{fh}", timeout=60)
            assert report.status_code == 200, report.text
            if local_copy_everywhere(s3_stack.storage_dir, report.json()):
                reachable += 1
                got = requests.get(f"{base}/download/{fh}", timeout=60)
                assert got.status_code == 200 and got.content == data, got.status_code
            else:  # a chunk whose copies are all on RGW: a clean 503, or a cut-off stream
                with requests.get(f"{base}/download/{fh}", stream=True, timeout=60) as got:
                    assert got.status_code in (200, 503)
        assert reachable >= len(before) + len(acked) // 2, reachable
        health = requests.get(f"{base}/health", timeout=30).json()
        down = {s["node_id"] for s in health["node_states"] if not s["reachable"]}
        assert down == {"rgw-0", "rgw-1"} and health["ready"]
    finally:
        ceph_s3.start_rgw()
    time.sleep(2.5)  # past the nodes' down window
    files = before + [(d, b["file_hash"]) for d, b in acked]
    s3_stack.send_task("repair_all")

    def all_back() -> bool:
        return all(all(c["count"] == 3 for c in verify(base, fh)["chunks"]) for _, fh in files)

    wait_for(all_back, 180, "every file back to r = 3 after one repair sweep", interval=2)
    for data, fh in files:  # 0 acknowledged uploads lost
        assert requests.get(f"{base}/download/{fh}", timeout=60).content == data
        assert_r_distinct(verify(base, fh))
