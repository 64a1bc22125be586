"""Job records in a real Redis: forward-only status, create-if-absent, atomic nonces."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from occ_protocol.status import Status
from tests.fixtures.services import ROOT, RedisServer
from workers.state import keys
from workers.state.jobs import Jobs
from workers.state.locks import LockBusyError, renewed_lock

pytestmark = pytest.mark.integration


@pytest.fixture
def jobs(redis_server: RedisServer) -> Jobs:
    client = redis_server.client()
    client.flushall()
    return Jobs(client)


def test_status_only_moves_forward(jobs: Jobs) -> None:
    assert jobs.create("q1", "quote", Status.QUOTED, {"a": 1}, owner="0xABC")
    assert not jobs.create("q1", "quote", Status.QUOTED, {"a": 2})  # never reset
    assert jobs.advance("q1", Status.PAYMENT_QUEUED)
    assert not jobs.advance("q1", Status.PAYMENT_QUEUED)
    assert not jobs.advance("q1", Status.QUOTED)
    assert jobs.advance("q1", Status.DONE)
    assert not jobs.advance("q1", Status.STORING)
    assert not jobs.advance("q1", Status.REFUNDING)  # never out of a final status
    job = jobs.get("q1")
    assert job is not None and job["status"] == 400 and job["data"] == {"a": 1}
    assert jobs.status("unknown") == 0
    assert not jobs.advance("unknown", Status.DONE)


def test_concurrent_advances_move_once(jobs: Jobs) -> None:
    jobs.create("q2", "quote", Status.QUOTED)
    with ThreadPoolExecutor(16) as pool:
        moved = list(pool.map(lambda _: jobs.advance("q2", Status.PAYMENT_QUEUED), range(64)))
    assert moved.count(True) == 1


def test_nonce_check_and_set(jobs: Jobs) -> None:
    assert jobs.claim_nonce("0xAbC", "1700000000")
    assert not jobs.claim_nonce("0xabc", "1700000000")  # same address, any case
    assert not jobs.claim_nonce("0xabc", "999")
    assert jobs.claim_nonce("0xabc", "1700000000001")  # milliseconds are larger
    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(lambda _: jobs.claim_nonce("0xdef", "42"), range(50)))
    assert won.count(True) == 1


def test_history_is_newest_first(jobs: Jobs) -> None:
    for i in range(5):
        jobs.create(f"h{i}", "quote", Status.QUOTED, owner="0xUser")
    total, items = jobs.history("0xuser", 0, 3)
    assert total == 5 and [j["id"] for j in items] == ["h4", "h3", "h2"]


def test_delivery_counter(jobs: Jobs) -> None:
    jobs.create("d", "replicate", Status.STORE_QUEUED)
    assert [jobs.count_delivery("d") for _ in range(3)] == [1, 2, 3]


def test_a_polled_job_is_not_stuck(jobs: Jobs) -> None:
    jobs.create("p", "quote", Status.REMOTE_PENDING)
    jobs.r.hset(keys.job("p"), "updated_at", f"{time.time() - 3600:.6f}")
    assert [j["id"] for j in jobs.stuck("quote", older_than=600)] == ["p"]
    jobs.touch("p")  # a live polling chain
    assert jobs.stuck("quote", older_than=600) == []
    assert [j["id"] for j in jobs.stuck("quote", older_than=0)] == ["p"]


def test_renewed_lock_outlives_its_ttl_while_held_and_lapses_when_the_holder_dies(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    with renewed_lock(client, "occ:lock:t", 0, ttl_s=0.6):
        time.sleep(1.5)  # 2.5 TTLs: kept by renewal
        with pytest.raises(LockBusyError), renewed_lock(client, "occ:lock:t", 0, ttl_s=0.6):
            pass
    with renewed_lock(client, "occ:lock:t", 0, ttl_s=0.6):
        pass  # released on exit
    # a holder SIGKILLed while holding it: no release, no renewal
    code = (
        "import os, redis, signal, sys; "
        "from workers.state.locks import renewed_lock; "
        f"c = redis.Redis(port={redis_server.port}); "
        "cm = renewed_lock(c, 'occ:lock:t', 0, ttl_s=0.6); cm.__enter__(); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == -signal.SIGKILL
    with pytest.raises(LockBusyError), renewed_lock(client, "occ:lock:t", 0, ttl_s=0.6):
        pass
    time.sleep(0.7)
    with renewed_lock(client, "occ:lock:t", 0, ttl_s=0.6):
        pass  # lapsed within the TTL
