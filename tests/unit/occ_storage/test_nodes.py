"""LocalDirNode: atomic sharded writes, verified reads, hash-only paths, replaced disks, janitor."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from occ_storage.errors import (
    ChunkMissingError,
    CorruptChunkError,
    InvalidHashError,
    InvalidNodeError,
    NodeError,
)
from occ_storage.nodes import LocalDirNode

from .conftest import payload


def chunk(i: int, size: int = 1000) -> tuple[str, bytes]:
    data = payload(size, seed=i)
    return hashlib.sha256(data).hexdigest(), data


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_round_trip_and_copy_if_absent(tmp_path: Path, sync: str) -> None:
    node = LocalDirNode(tmp_path / "n", "n", sync=sync)
    batch = [chunk(i) for i in range(10)]
    assert node.put_chunks(batch) == 10
    assert node.put_chunks(batch) == 0
    assert node.put_chunk(*batch[0]) is False
    for cid, data in batch:
        assert node.has_chunk(cid)
        assert node.get_chunk(cid) == data
        assert node.chunk_size_on_disk(cid) == len(data)
        assert node.chunk_path(cid) == tmp_path / "n" / "chunks" / cid[:2] / cid[2:4] / cid
    assert sorted(node.list_chunks()) == sorted(c for c, _ in batch)
    assert node.used_bytes() == 10 * 1000
    assert node.free_bytes() > 0
    assert not [p for p in all_files(tmp_path) if p.name.startswith(".tmp-")]
    assert node.delete_chunk(batch[0][0]) is True
    assert node.delete_chunk(batch[0][0]) is False
    assert not node.has_chunk(batch[0][0])
    with pytest.raises(ChunkMissingError):
        node.get_chunk(batch[0][0])
    with pytest.raises(ChunkMissingError):
        node.chunk_size_on_disk(batch[0][0])


def test_duplicates_in_one_batch(tmp_path: Path) -> None:
    node = LocalDirNode(tmp_path / "n", "n")
    c = chunk(1)
    assert node.put_chunks([c, c, c]) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "extend"])
def test_corruption_is_detected(tmp_path: Path, damage: str) -> None:
    node = LocalDirNode(tmp_path / "n", "n")
    cid, data = chunk(3)
    node.put_chunk(cid, data)
    path = node.chunk_path(cid)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[500] ^= 0x01
    elif damage == "truncate":
        raw = raw[:-1]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw += b"\0"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptChunkError):
        node.get_chunk(cid)
    assert node.has_chunk(cid)  # present, but never served
    assert node.put_chunk(cid, data) is False  # copy-if-absent: repair deletes first


BAD_IDS = [
    "xyz",
    "../etc/passwd",
    "a" * 65,
    "A" * 64,
    "a" * 63,
    "",
    "../" + "a" * 61,
    "a" * 63 + "/",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_ids_rejected_before_any_path(tmp_path: Path, bad: str) -> None:
    node = LocalDirNode(tmp_path / "n", "n")
    calls: list[Callable[[], object]] = [
        lambda: node.put_chunk(bad, b"x"),
        lambda: node.put_chunks([(bad, b"x")]),
        lambda: node.get_chunk(bad),
        lambda: node.has_chunk(bad),
        lambda: node.delete_chunk(bad),
        lambda: node.chunk_size_on_disk(bad),
        lambda: node.put_manifest(bad, b"{}"),
        lambda: node.get_manifest(bad),
        lambda: node.delete_manifest(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidHashError):
            call()
    assert not list(tmp_path.rglob("*"))


def test_bad_node_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalDirNode(tmp_path, "n", sync="sometimes")
    with pytest.raises(InvalidNodeError):
        LocalDirNode(tmp_path, "")
    with pytest.raises(InvalidNodeError):
        LocalDirNode(tmp_path, "n", weight=-1)


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_deleted_node_directory_acts_missing_and_is_recreated(tmp_path: Path, sync: str) -> None:
    root = tmp_path / "disk" / "n"
    node = LocalDirNode(root, "n", sync=sync)
    cid, data = chunk(4)
    node.put_chunk(cid, data)
    node.put_manifest(cid, b"{}")
    import shutil

    shutil.rmtree(tmp_path / "disk")
    assert not node.has_chunk(cid)
    with pytest.raises(ChunkMissingError):
        node.get_chunk(cid)
    assert node.get_manifest(cid) is None
    assert list(node.list_chunks()) == []
    assert list(node.list_manifests()) == []
    assert node.used_bytes() == 0
    assert node.free_bytes() > 0
    assert node.put_chunk(cid, data) is True
    assert node.get_chunk(cid) == data


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_os_errors_become_node_errors(tmp_path: Path, sync: str) -> None:
    root = tmp_path / "n"
    root.write_bytes(b"not a directory")
    node = LocalDirNode(root, "n", sync=sync)
    cid, data = chunk(5)
    with pytest.raises(NodeError):
        node.put_chunk(cid, data)
    with pytest.raises(NodeError):
        node.put_manifest(cid, b"{}")
    assert not node.has_chunk(cid)
    with pytest.raises(ChunkMissingError):
        node.get_chunk(cid)


def test_unreadable_chunk_is_node_error(tmp_path: Path) -> None:
    node = LocalDirNode(tmp_path / "n", "n")
    cid, _ = chunk(6)
    node.chunk_path(cid).mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(NodeError):
        node.get_chunk(cid)


@pytest.mark.parametrize("sync", ["fsync", "syncfs"])
def test_manifests(tmp_path: Path, sync: str) -> None:
    node = LocalDirNode(tmp_path / "n", "n", sync=sync)
    h1, h2 = chunk(1)[0], chunk(2)[0]
    node.put_manifest(h1, b"one")
    node.put_manifest(h1, b"two")  # replaced
    node.put_manifest(h2, b"x")
    assert node.get_manifest(h1) == b"two"
    assert sorted(node.list_manifests()) == sorted([h1, h2])
    assert node.delete_manifest(h1) is True
    assert node.delete_manifest(h1) is False
    assert node.get_manifest(h1) is None
    assert list(node.list_chunks()) == []


def test_cleanup_temp_removes_only_old_orphans(tmp_path: Path) -> None:
    node = LocalDirNode(tmp_path / "n", "n")
    cid, data = chunk(7)
    node.put_chunk(cid, data)
    shard = node.chunk_path(cid).parent
    old = shard / ".tmp-dead-orphan"
    new = shard / ".tmp-live-writer"
    old.write_bytes(b"partial")
    new.write_bytes(b"partial")
    past = time.time() - 7200
    os.utime(old, (past, past))
    mdir = tmp_path / "n" / "manifests" / "ab"
    mdir.mkdir(parents=True)
    (mdir / ".tmp-x").write_bytes(b"")
    os.utime(mdir / ".tmp-x", (past, past))
    assert sorted(node.list_chunks()) == [cid]  # temps are never listed as chunks
    assert node.cleanup_temp(3600) == 2
    assert not old.exists() and new.exists()
    assert node.get_chunk(cid) == data
