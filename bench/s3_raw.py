"""Raw boto3 PUT/GET speed to the S3 endpoint of a node (the yardstick for bench/store.py --nodes-file).

The same object size as the store's chunks, the same number of parallel requests as the node's
pool, plain put_object/get_object with no hashing beyond what boto3 does itself: what one
client can push through that endpoint.
"""

from __future__ import annotations

import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from occ_storage.s3node import S3Node


def raw_put_get_mb_s(node: S3Node, total: int, object_size: int) -> tuple[float, float]:
    """(PUT MB/s, GET MB/s) for `total` bytes in `object_size` objects, then delete them."""
    count = max(1, total // object_size)
    body = os.urandom(object_size)
    prefix = f"bench-raw-{secrets.token_hex(4)}/"
    keys = [f"{prefix}{i:08d}" for i in range(count)]
    client: Any = node.client
    workers = max(1, node._pool_size)

    def put(key: str) -> None:
        client.put_object(Bucket=node.bucket, Key=key, Body=body)

    def get(key: str) -> int:
        return len(client.get_object(Bucket=node.bucket, Key=key)["Body"].read())

    with ThreadPoolExecutor(workers) as pool:
        t0 = time.perf_counter()
        list(pool.map(put, keys))
        put_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = sum(pool.map(get, keys))
        get_s = time.perf_counter() - t0
        list(pool.map(lambda k: client.delete_object(Bucket=node.bucket, Key=k), keys))
    if got != count * object_size:
        raise SystemExit("raw GET returned the wrong number of bytes")
    nbytes = count * object_size
    return nbytes / put_s / 1e6, nbytes / get_s / 1e6
