"""workers/services/storage.py: quorum writes queue the rest, bad replicas queue a repair, the lock."""

from __future__ import annotations

import io
import os

import pytest

from occ_protocol.status import Status
from occ_storage.errors import ContentMismatchError, UnknownFileError
from tests.unit.workers.conftest import Queue
from workers.runtime import Runtime
from workers.services import storage
from workers.state import keys
from workers.state.locks import LockBusyError, renewed_lock


def test_quorum_upload_queues_one_replicate_job(rt: Runtime, queue: Queue) -> None:
    data = os.urandom(600_000)
    out = storage.store_upload(rt, io.BytesIO(data), "a.bin", 3)
    assert out["durable_copies"] == 2 and out["replication_factor"] == 3
    assert queue.sent == [("replicate_file", (out["job_id"],))]
    job = rt.jobs.get(out["job_id"])
    assert job is not None and job["kind"] == "replicate"
    assert job["status"] == Status.STORE_QUEUED
    assert job["data"] == {"file_hash": out["file_hash"], "replication_factor": 3}


def test_r1_upload_queues_nothing(rt: Runtime, queue: Queue) -> None:
    out = storage.store_upload(rt, io.BytesIO(b"x" * 1000), "a.bin", 1)
    assert out["job_id"] is None and queue.sent == []


def test_expected_hash_mismatch_registers_nothing(rt: Runtime, queue: Queue) -> None:
    with pytest.raises(ContentMismatchError):
        storage.store_upload(rt, io.BytesIO(b"abc"), "a.bin", 3, expected_hash="0" * 64)
    assert rt.store.count_files() == 0 and queue.sent == []


def test_a_corrupt_replica_is_skipped_and_queues_a_repair(rt: Runtime, queue: Queue) -> None:
    data = os.urandom(300_000)
    out = storage.store_upload(rt, io.BytesIO(data), "a.bin", 3)
    queue.sent.clear()
    manifest = rt.store.manifest(out["file_hash"])
    first = manifest.chunks[0].id
    by_id = {n.node_id: n for n in rt.nodes}
    holders = [by_id[i] for i in manifest.placement[first]]
    for node in holders[:1] + holders[2:]:  # every replica but the second is corrupt
        path = node.root / "chunks" / first[:2] / first[2:4] / first  # type: ignore[attr-defined]
        if path.exists():
            path.write_bytes(b"corrupt")
    assert b"".join(storage.read_file(rt, out["file_hash"], 0, len(data))) == data
    assert ("repair_file", (out["file_hash"],)) in queue.sent


def test_rebalance_of_an_unknown_file_creates_no_job(rt: Runtime, queue: Queue) -> None:
    with pytest.raises(UnknownFileError):
        storage.start_rebalance(rt, "a" * 64, 2)
    assert queue.sent == []
    assert list(rt.redis.scan_iter(match=keys.JOB_PATTERN)) == []


def test_delete_waits_for_the_file_lock(rt: Runtime) -> None:
    out = storage.store_upload(rt, io.BytesIO(b"y" * 5000), "a.bin", 1)
    with (
        renewed_lock(rt.redis, keys.file_lock(out["file_hash"]), 0),
        pytest.raises(LockBusyError),
        storage.file_lock(rt, out["file_hash"], wait_s=0.2),
    ):
        pass
    storage.delete_file(rt, out["file_hash"])
    with pytest.raises(UnknownFileError):
        rt.store.manifest(out["file_hash"])


def test_a_download_is_its_first_chunk_then_blocks_of_a_mebibyte(rt: Runtime) -> None:
    chunk = rt.store.chunk_size
    data = os.urandom(3 * storage.SEND_BLOCK + 3 * chunk + 17)
    out = storage.store_upload(rt, io.BytesIO(data), "a.bin", 1)
    for start, end in ((0, len(data)), (chunk // 2, len(data) - chunk), (5, 6)):
        blocks = list(storage.read_file(rt, out["file_hash"], start, end))
        assert b"".join(blocks) == data[start:end]
        assert len(blocks[0]) == min(chunk - start % chunk, end - start)  # the first chunk alone
        assert all(len(b) >= storage.SEND_BLOCK for b in blocks[1:-1])
        assert all(len(b) < storage.SEND_BLOCK + chunk for b in blocks[1:])
