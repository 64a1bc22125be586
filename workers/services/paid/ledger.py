"""Signatures, nonces and the durable ledger (protocol.md §2): a replay is refused even after a Redis rollback."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from occ_protocol.formats import NONCE_USED_MESSAGE
from occ_protocol.signatures import (
    SignatureError,
    is_valid_nonce,
    parse_signature,
    verify_owner,
)
from occ_storage.nodes import fsync_dir
from workers.services.paid.errors import MalformedSignatureError, NonceUsedError, WrongSignerError
from workers.settings import Settings

if TYPE_CHECKING:
    from workers.runtime import Runtime

log = logging.getLogger("workers.paid")


def check_signature(
    quote_id: str, nonce: str, signature: str, owner: str, who: str = "the quote's owner"
) -> None:
    """Check that ``owner`` signed signed_text(quote_id, nonce) (protocol.md §2).

    Raises MalformedSignatureError (bad nonce or signature encoding, high s) or WrongSignerError.
    """
    if not is_valid_nonce(nonce):
        raise MalformedSignatureError("nonce must be 1 to 13 decimal digits")
    try:
        parse_signature(signature)
    except SignatureError as exc:
        raise MalformedSignatureError(f"Malformed signature: {exc}") from None
    try:
        verify_owner(quote_id, nonce, signature, owner)
    except SignatureError:
        raise WrongSignerError(f"Signature is not by {who}") from None


def _write_json_durably(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, json.dumps(obj, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        log.error("ledger file %s is unreadable", path.name)
        raise
    return value if isinstance(value, dict) else None


class Ledger:
    """Nonces and consumed quotes, fsync'd as small JSON files beside Redis.

    Redis decides races (atomic Lua check-and-set); the ledger makes the outcome survive a
    Redis rollback: a nonce or quote recorded here is refused even if Redis forgot it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_settings(cls, settings: Settings) -> Ledger:
        return cls(settings.storage_dir / "ledger")

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _nonce_path(self, address: str) -> Path:
        return self.root / "nonces" / f"{address.lower()}.json"

    def _quote_path(self, quote_id: str) -> Path:
        return self.root / "quotes" / f"{quote_id.lower()}.json"

    def last_nonce(self, address: str) -> int | None:
        """Return the last nonce recorded for ``address`` (None if none)."""
        entry = _read_json(self._nonce_path(address))
        return None if entry is None else int(entry["last"])

    def record_nonce(self, address: str, nonce: int) -> None:
        """Durably raise the last nonce of ``address`` to ``nonce`` (never lowers it)."""
        path = self._nonce_path(address)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(address.lower()):
            last = self.last_nonce(address)
            if last is None or nonce > last:
                _write_json_durably(
                    path, {"address": address.lower(), "last": nonce, "at": time.time()}
                )

    def consumed(self, quote_id: str) -> bool:
        """Return whether the quote's one upload was accepted."""
        return self._quote_path(quote_id).exists()

    def record_consumed(self, quote_id: str, nonce: str) -> None:
        """Durably mark the quote's upload as accepted."""
        path = self._quote_path(quote_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_durably(path, {"quoteId": quote_id.lower(), "nonce": nonce, "at": time.time()})


def claim_nonce(rt: Runtime, address: str, nonce: str) -> None:
    """Accept ``nonce`` for ``address`` only if it is greater than the last one (NonceUsedError).

    The ledger is checked first (a Redis rollback cannot reopen a replay), Redis decides
    concurrent requests atomically, then the ledger records it before any side effect.
    """
    ledger = Ledger.for_settings(rt.settings)
    value = int(nonce)
    last = ledger.last_nonce(address)
    if (last is not None and value <= last) or not rt.jobs.claim_nonce(address, nonce):
        raise NonceUsedError(f"{NONCE_USED_MESSAGE}: it must be greater than the last one")
    ledger.record_nonce(address, value)
