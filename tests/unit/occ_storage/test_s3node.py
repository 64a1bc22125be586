"""S3Node error paths on moto's in-process S3 (fast; the real proof runs on Ceph RGW in
tests/integration/test_s3_nodes.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from occ_storage.errors import ChunkMissingError, CorruptChunkError, InvalidHashError, NodeError
from occ_storage.s3node import S3Node


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        c = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        )
        c.create_bucket(Bucket="occ-test")
        yield c


def chunk(n: int) -> tuple[str, bytes]:
    data = bytes([n]) * (100 + n)
    return hashlib.sha256(data).hexdigest(), data


def test_roundtrip_and_missing(client: Any) -> None:
    node = S3Node(client, "occ-test", "s1", prefix="p")
    cid, data = chunk(1)
    assert node.put_chunk(cid, data) and not node.put_chunk(cid, data)
    assert node.get_chunk(cid) == data
    assert client.head_object(Bucket="occ-test", Key=f"p/chunks/{cid}")["ContentLength"] == len(
        data
    )
    missing, _ = chunk(2)
    with pytest.raises(ChunkMissingError):
        node.get_chunk(missing)
    with pytest.raises(ChunkMissingError):
        node.chunk_size_on_disk(missing)
    assert node.get_manifest(missing) is None and not node.delete_manifest(missing)


def test_corrupt_object_is_never_returned(client: Any) -> None:
    node = S3Node(client, "occ-test", "s1")
    cid, data = chunk(3)
    client.put_object(Bucket="occ-test", Key=f"chunks/{cid}", Body=data[:-1] + b"\x00")
    with pytest.raises(CorruptChunkError):
        node.get_chunk(cid)


def test_data_not_matching_its_id_is_refused(client: Any) -> None:
    node = S3Node(client, "occ-test", "s1")
    cid, _ = chunk(4)
    with pytest.raises(CorruptChunkError):
        node.put_chunk(cid, b"other bytes")
    with pytest.raises(InvalidHashError):
        node.get_chunk("../../etc/passwd")


def test_missing_bucket_is_a_node_error(client: Any) -> None:
    node = S3Node(client, "no-such-bucket", "s1")
    cid, data = chunk(5)
    with pytest.raises(NodeError):
        node.put_chunk(cid, data)
    with pytest.raises(NodeError):
        list(node.list_chunks())
    with pytest.raises(NodeError):
        node.ping()


def test_unreachable_endpoint_fails_fast_and_recovers() -> None:
    """No answer (connection refused) marks the node down: later calls fail at once."""
    dead = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1),
    )
    node = S3Node(dead, "occ-test", "s1", down_for_s=30)
    cid, data = chunk(6)
    with pytest.raises(NodeError, match="EndpointConnectionError"):
        node.put_chunk(cid, data)
    with pytest.raises(NodeError, match="unreachable"):
        node.get_chunk(cid)
    node._down_until = 0.0
    with pytest.raises(NodeError, match="EndpointConnectionError"):
        node.has_chunk(cid)


def test_stale_and_claims(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import occ_storage.s3node as s3node

    node = S3Node(client, "occ-test", "s1")
    cid, data = chunk(7)
    node.put_chunk(cid, data)
    # seen from two days on: the chunk is stale until a put reuses it (the claim is fresh then)
    now = s3node.time.time()
    monkeypatch.setattr(s3node.time, "time", lambda: now + 2 * 86400)
    assert list(node.stale_chunks(86400)) == [cid]
    monkeypatch.undo()
    node.put_chunk(cid, data)  # reuse: a claim
    monkeypatch.setattr(s3node.time, "time", lambda: now + 86400 - 60)
    assert list(node.stale_chunks(86400)) == []
    assert not node.discard_if_stale(cid, 86400)
    monkeypatch.setattr(s3node.time, "time", lambda: now + 3 * 86400)
    assert node.cleanup_temp(3600) == 1  # the expired claim
    assert list(node.stale_chunks(86400)) == [cid]
