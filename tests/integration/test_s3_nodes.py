"""S3Node against a real Ceph RADOS Gateway (scripts/ceph.sh): the node contract, the orphan-sweep
race, and a ChunkStore over 3 local directories + 2 RGW buckets."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from occ_storage.errors import ChunkMissingError, CorruptChunkError, NodeError
from occ_storage.nodes import LocalDirNode, NodeBackend
from occ_storage.s3node import SLACK_S, S3Node
from occ_storage.store import ChunkStore
from tests.fixtures.ceph import CephS3

pytestmark = pytest.mark.integration

CHUNK = 65536


def blob(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def cid_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def node(ceph_s3: CephS3) -> S3Node:
    return S3Node(ceph_s3.client(), ceph_s3.new_bucket(), "rgw-a", endpoint=ceph_s3.endpoint)


class IgnoresConditions:
    """A client for a store that ignores If-None-Match (it overwrites): the probe must say no."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_object(self, **kwargs: Any) -> Any:
        kwargs.pop("IfNoneMatch", None)
        return self.client.put_object(**kwargs)


def test_conditional_put_is_probed_never_assumed(ceph_s3: CephS3, node: S3Node) -> None:
    assert node.probe_conditional_put() is True  # RGW answers the second PUT with 412
    assert list(node._list("probe")) == []  # the probe object is removed
    ignoring = S3Node(IgnoresConditions(ceph_s3.client()), node.bucket, "rgw-b")
    assert ignoring.probe_conditional_put() is False
    ceph_s3.stop_rgw()
    try:
        down = S3Node(ceph_s3.client(), node.bucket, "rgw-c")
        assert down.probe_conditional_put() is None  # unreachable: not decided
    finally:
        ceph_s3.start_rgw()
    auto = S3Node(ceph_s3.client(), node.bucket, "rgw-d", conditional_put=None)
    data = blob(7, 100)
    assert auto.put_chunk(cid_of(data), data) and auto.conditional_put is True
    careful = S3Node(
        IgnoresConditions(ceph_s3.client()), node.bucket, "rgw-e", conditional_put=None
    )
    assert not careful.put_chunk(cid_of(data), data) and careful.conditional_put is False


def test_node_contract_on_rgw(node: S3Node) -> None:
    chunks = [blob(i, 1000 + i) for i in range(5)]
    batch = [(cid_of(c), c) for c in chunks]
    assert node.put_chunks(batch) == 5
    assert node.put_chunks(batch) == 0  # copy-if-absent
    node.conditional_put = True
    assert node.put_chunks(batch) == 0  # If-None-Match: * answered 412 by RGW
    extra = blob(99, 10)
    assert node.put_chunk(cid_of(extra), extra) and node.delete_chunk(cid_of(extra))
    assert sorted(node.list_chunks()) == sorted(cid for cid, _ in batch)
    cid, data = batch[0]
    assert node.get_chunk(cid) == data and node.has_chunk(cid)
    assert node.chunk_size_on_disk(cid) == len(data)
    node.put_manifest(cid, b'{"m": 1}')
    assert node.get_manifest(cid) == b'{"m": 1}' and list(node.list_manifests()) == [cid]
    assert node.used_bytes() == sum(len(c) for c in chunks) + len(b'{"m": 1}')
    assert node.delete_chunk(cid) and not node.delete_chunk(cid)
    with pytest.raises(ChunkMissingError):
        node.get_chunk(cid)
    assert node.delete_manifest(cid) and node.get_manifest(cid) is None
    node.ping()


def test_listing_is_paginated(node: S3Node) -> None:
    batch = [(cid_of(d), d) for d in (blob(50 + i, 64) for i in range(1100))]
    node._pool_size = 32
    assert node.put_chunks(batch) == 1100
    assert len(set(node.list_chunks())) == 1100  # > one 1000-key page


def test_flipped_byte_in_rgw_is_detected(node: S3Node) -> None:
    data = blob(1, 5000)
    cid = cid_of(data)
    node.put_chunk(cid, data)
    bad = bytearray(data)
    bad[77] ^= 0x01
    node.client.put_object(Bucket=node.bucket, Key=f"chunks/{cid}", Body=bytes(bad))
    with pytest.raises(CorruptChunkError):
        node.get_chunk(cid)


def test_wrong_content_md5_is_refused_by_rgw(node: S3Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node sends Content-MD5 and RGW checks it: a body that does not match is refused."""
    import occ_storage.s3node as s3node

    class SkewedHashlib:
        sha256 = staticmethod(hashlib.sha256)

        @staticmethod
        def md5(data: bytes, **kw: Any) -> Any:
            return hashlib.md5(b"not " + data, **kw)

    monkeypatch.setattr(s3node, "hashlib", SkewedHashlib)
    data = blob(2, 3000)
    with pytest.raises(NodeError, match="BadDigest"):
        node.put_chunk(cid_of(data), data)
    monkeypatch.undo()
    assert not node.has_chunk(cid_of(data))


class Interleave:
    """A client proxy that runs `action` once, right after the first call of `op` on `key_part`."""

    def __init__(self, client: Any, op: str, key_part: str, action: Callable[[], None]) -> None:
        self._client, self._op, self._key_part, self._action = client, op, key_part, action
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._client, name)
        if name != self._op:
            return fn

        def wrapped(**kwargs: Any) -> Any:
            out = fn(**kwargs)
            where = str(kwargs.get("Key", "")) + str(kwargs.get("Prefix", ""))
            if not self.fired and self._key_part in where:
                self.fired = True
                self._action()
            return out

        return wrapped


@pytest.mark.parametrize(
    ("op", "key_part"),
    [
        ("copy_object", "trash/"),  # the put claims after the move-aside copy
        ("delete_object", "chunks/"),  # ... after the chunk was deleted
        ("list_objects_v2", "claims/"),  # ... after the sweep looked for claims
        ("head_object", "trash/"),  # ... between the copy and the delete
    ],
)
@pytest.mark.parametrize("conditional", [False, True])
def test_sweep_never_removes_a_chunk_a_concurrent_put_relies_on(
    ceph_s3: CephS3, op: str, key_part: str, conditional: bool
) -> None:
    """Two hosts on one bucket: host B's sweep judges an orphan while host A's put reuses it.

    Whatever the interleaving, once A's put has returned the chunk is on the node and verifies.
    """
    bucket = ceph_s3.new_bucket()
    host_a = S3Node(ceph_s3.client(), bucket, "rgw", conditional_put=conditional)
    data = blob(3, 4000)
    cid = cid_of(data)
    host_a.put_chunk(cid, data)
    time.sleep(SLACK_S + 0.1)  # older than the sweep's age (0 s + LastModified's 1 s resolution)
    reused: list[bool] = []
    proxy = Interleave(
        ceph_s3.client(), op, key_part, lambda: reused.append(host_a.put_chunk(cid, data))
    )
    host_b = S3Node(proxy, bucket, "rgw")
    removed = host_b.discard_if_stale(cid, 0.0)
    assert proxy.fired and len(reused) == 1
    assert host_a.get_chunk(cid) == data, f"removed={removed} reused={reused}"
    assert not list(host_a._list("trash"))


def test_sweep_removes_an_unclaimed_orphan_and_cleans_up(node: S3Node) -> None:
    data = blob(4, 4000)
    cid = cid_of(data)
    node.put_chunk(cid, data)
    assert list(node.stale_chunks(0.0)) == [] and not node.discard_if_stale(cid, 0.0)
    time.sleep(SLACK_S + 0.1)
    assert list(node.stale_chunks(0.0)) == [cid]
    assert node.discard_if_stale(cid, 0.0)
    assert not node.has_chunk(cid) and not list(node._list("trash"))
    # a chunk written now is not stale for a one-hour age (the conditional copy refuses too)
    node.put_chunk(cid, data)
    assert list(node.stale_chunks(3600)) == []
    assert not node.discard_if_stale(cid, 3600) and node.has_chunk(cid)


def test_cleanup_restores_what_a_dead_sweep_left_in_trash(node: S3Node) -> None:
    data = blob(5, 4000)
    cid = cid_of(data)
    node.put_chunk(cid, data)
    node.client.copy_object(
        Bucket=node.bucket,
        Key=f"trash/{cid}.dead",
        CopySource={"Bucket": node.bucket, "Key": f"chunks/{cid}"},
    )
    node.delete_chunk(cid)  # the sweep died between its delete and its claim check
    assert node.cleanup_temp(0.0) >= 1
    assert node.get_chunk(cid) == data and not list(node._list("trash"))


def mixed_store(tmp_path: Path, ceph_s3: CephS3) -> tuple[ChunkStore, list[NodeBackend]]:
    nodes: list[NodeBackend] = [
        LocalDirNode(tmp_path / f"local-{i}", f"local-{i}") for i in range(3)
    ]
    nodes += [S3Node(ceph_s3.client(), ceph_s3.new_bucket(), f"rgw-{i}") for i in range(2)]
    return ChunkStore(nodes, chunk_size=CHUNK), nodes


def test_three_local_and_two_rgw_nodes(tmp_path: Path, ceph_s3: CephS3) -> None:
    store, nodes = mixed_store(tmp_path, ceph_s3)
    data = blob(6, 40 * CHUNK + 123)
    m = store.put(io.BytesIO(data), "f.bin", 3)
    report = store.verify(m.file_hash)
    assert all(c.count == 3 and len(set(c.nodes)) == 3 for c in report.chunks)
    on_rgw = [c for c in report.chunks if any(n.startswith("rgw") for n in c.nodes)]
    assert len(on_rgw) >= 10  # rendezvous spreads chunks over the RGW buckets too
    assert b"".join(store.read(m.file_hash)) == data
    # a flipped byte in an RGW object: never served, reported, repaired from a verified copy
    victim = on_rgw[0]
    nid = next(n for n in victim.nodes if n.startswith("rgw"))
    rgw = next(n for n in nodes if n.node_id == nid)
    assert isinstance(rgw, S3Node)
    key = f"chunks/{victim.chunk_id}"
    raw = bytearray(rgw.client.get_object(Bucket=rgw.bucket, Key=key)["Body"].read())
    raw[len(raw) // 2] ^= 0x80
    rgw.client.put_object(Bucket=rgw.bucket, Key=key, Body=bytes(raw))
    store.bad_replicas.clear()
    lo, hi = victim.offset, victim.offset + victim.size
    # make the corrupt replica the first one a read tries
    placement = dict(m.placement)
    placement[victim.chunk_id] = (nid, *[n for n in victim.nodes if n != nid])
    store.index.put(dataclasses.replace(m, placement=placement))
    assert b"".join(store.read(m.file_hash, lo, hi)) == data[lo:hi]
    assert (victim.chunk_id, nid) in store.bad_replicas
    assert (victim.chunk_id, nid) in store.verify(m.file_hash).bad_replicas
    result = store.repair(m.file_hash)
    assert not result.lost and not result.failed
    assert rgw.get_chunk(victim.chunk_id) == data[lo:hi]
    assert all(c.count == 3 for c in store.verify(m.file_hash).chunks)


def test_orphan_sweep_over_mixed_nodes(tmp_path: Path, ceph_s3: CephS3) -> None:
    store, nodes = mixed_store(tmp_path, ceph_s3)
    kept = store.put(io.BytesIO(blob(7, 5 * CHUNK)), "kept", 3)
    orphan = blob(8, CHUNK)
    for n in nodes:
        n.put_chunk(cid_of(orphan), orphan)
    time.sleep(SLACK_S + 0.1)
    assert store.sweep_orphans(0.0) == 5
    assert all(not n.has_chunk(cid_of(orphan)) for n in nodes)
    assert all(c.count == 3 for c in store.verify(kept.file_hash).chunks)
