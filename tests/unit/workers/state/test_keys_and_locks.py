"""workers/state: every key under one prefix, and the one lock idiom."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.services import RedisServer
from workers.state import keys
from workers.state.locks import LockBusyError, renewed_lock


def test_every_key_is_under_the_prefix_and_distinct() -> None:
    names = [
        keys.job("j"),
        keys.history("0xAB"),
        keys.nonce("0xAB"),
        keys.INDEX_FILES,
        keys.index_file("f"),
        keys.index_chunk("c"),
        keys.REGISTRY_PREFIX,
        keys.REGISTRY_INDEX,
        keys.REGISTRY_SEEN_PREFIX,
        keys.SKETCH_MERGED,
        keys.SKETCH_NODES,
        keys.HEALTH_LAST,
        keys.REPAIR_SCHEDULED,
        keys.PAID_EXPIRY,
        keys.paid_tx("0xAB"),
        keys.paid_redriven("q"),
        keys.SCRUB_LOCK,
        keys.file_lock("f"),
        keys.quote_lock("q"),
        keys.gateway_nonce_lock(1, "0xAB"),
        keys.RATELIMIT_PREFIX,
    ]
    assert all(n.startswith(keys.PREFIX) for n in names)
    assert len(set(names)) == len(names)
    assert keys.nonce("0xAB") == keys.nonce("0xab")  # addresses compared case-insensitively


def test_a_held_lock_is_busy_and_renewed_past_its_ttl(redis_server: RedisServer) -> None:
    client = redis_server.client()
    name = keys.LOCK_PREFIX + "unit-test"
    client.delete(name)
    with renewed_lock(client, name, 0, ttl_s=0.6):
        time.sleep(1.5)  # 2.5 TTLs: only renewal keeps it
        with pytest.raises(LockBusyError), renewed_lock(client, name, 0, ttl_s=0.6):
            pass
    with renewed_lock(client, name, 0, ttl_s=0.6):  # released on exit
        pass


def test_a_waiter_gets_the_lock_when_it_is_released(redis_server: RedisServer) -> None:
    client = redis_server.client()
    name = keys.LOCK_PREFIX + "unit-wait"
    client.delete(name)
    got = threading.Event()
    with renewed_lock(client, name, 0, ttl_s=5):

        def wait() -> None:
            with renewed_lock(client, name, wait_s=5, ttl_s=5):
                got.set()

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.3)
        assert not got.is_set()
    t.join(5)
    assert got.is_set()
