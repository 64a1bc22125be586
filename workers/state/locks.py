"""The one lock idiom: a Redis lock held across processes, renewed while its holder lives."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import redis

log = logging.getLogger("workers.locks")

LOCK_TTL_S = 30.0  # a dead holder's lock lapses this soon; a live holder renews it


class LockBusyError(TimeoutError):
    """Another job holds the lock (a file being repaired, a paid quote being stored, the
    gateway account signing a transaction): transient, the caller retries later."""


@contextlib.contextmanager
def renewed_lock(
    client: redis.Redis, name: str, wait_s: float, ttl_s: float = LOCK_TTL_S
) -> Iterator[None]:
    """Hold the Redis lock ``name`` across processes, renewed by a thread every ttl_s/3.

    A SIGKILLed holder cannot release it, so it lapses within ``ttl_s``; a live holder keeps it
    however long the work takes. Raises LockBusyError if it is not free within ``wait_s``.
    """
    # thread_local=False: the renewing thread must see the token the acquiring thread got
    lock = client.lock(name, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(blocking=wait_s > 0):
        raise LockBusyError(f"{name} is held by another job")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                lock.reacquire()
            except Exception:  # lost the lock: the work is idempotent, the next holder redoes it
                log.warning("lock lost", extra={"event": name})
                return

    keeper = threading.Thread(target=renew, daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        with contextlib.suppress(Exception):
            lock.release()
