"""Nonces as Ocean's uploader.js sends them: the current Unix time in whole seconds.

The gateway keeps one nonce counter per wallet address, shared by upload and getLink, and a
request passes only with a nonce larger than the last one it accepted for that address. Ocean's
client signs with ``Math.round(Date.now() / 1000)``, so a wallet that has ever signed a nonce
ahead of the current second (a millisecond nonce, or "last + 1" run ahead of the clock) is locked
out of Ocean's client until the clock catches up. This client therefore never signs a nonce
ahead of the current second: when two signed calls fall in one second it waits for the next.
The last nonce used per address is remembered in a small JSON file in the client's directory so
that separate invocations within one second wait too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MAX_WAIT_S = 5.0  # a remembered nonce further ahead than this is not waited for


class NonceError(Exception):
    """No nonce can be made without running ahead of the clock."""


def cache_dir() -> Path:
    """Return the client's own directory (``OCC_CLIENT_CACHE``, default ~/.cache/occ-client)."""
    env = os.environ.get("OCC_CLIENT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "occ-client"


def state_path() -> Path:
    """Return the file where the last nonce of each address is remembered (losing it is harmless:
    the clock alone still never runs ahead)."""
    return cache_dir() / "nonces.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[dict[str, int]]:
    """Yield the remembered nonces under an exclusive lock; write them back atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text())
            known = {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            known = {}
        yield known
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nonces-")
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, path)


def next_nonce(
    address: str,
    after: str | int | None = None,
    *,
    path: Path | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Return a fresh nonce for ``address``: the current second, larger than any used before.

    ``after`` is a nonce this process used already. Waits (at most ``MAX_WAIT_S``) for the next
    second when the current one is taken; raises NonceError rather than sign ahead of the clock.
    """
    key = address.lower()
    try:
        with _locked(path or state_path()) as known:
            nonce = _wait_for_fresh_second(max(known.get(key, -1), _int(after)), clock, sleep)
            known[key] = nonce
    except OSError:  # no writable state dir: still never ahead of the clock within this process
        nonce = _wait_for_fresh_second(_int(after), clock, sleep)
    return str(nonce)


def _int(value: str | int | None) -> int:
    return -1 if value is None else int(value)


def _wait_for_fresh_second(
    last: int, clock: Callable[[], float], sleep: Callable[[float], None]
) -> int:
    now = clock()
    if last - now > MAX_WAIT_S:
        raise NonceError(
            f"this wallet already used nonce {last}, {last - now:.0f} s ahead of the clock; "
            "the gateway accepts only larger nonces, so wait until then or use another wallet"
        )
    while int(now) <= last:
        sleep(last + 1 - now)
        now = clock()
    return int(now)
