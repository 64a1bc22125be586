"""Registry of storage microservices (protocol.md §6): signed records in Redis that expire unless refreshed.

Keys (names in workers/state/keys.py):

- ``occ:registry:<type>``: the live record (JSON), ``SET ... EX ttl``, renewed by each registration.
  A storage not seen for ``ttl`` seconds vanishes by itself: it is neither listed nor routed to.
- ``occ:registry_index``: sorted set of registered types scored by expiry time, so listing never
  scans the keyspace; the record key, not the index, decides whether a storage is live.
- ``occ:registry_seen:<sha256 of the signature>``: ``SET NX`` marker of every accepted signature,
  kept for at least twice the signature's validity window, so a captured registration cannot be
  replayed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import redis

from occ_protocol.formats import ADDRESS_RE
from occ_protocol.signatures import (
    DEFAULT_MAX_SKEW_S,
    SignatureError,
    parse_signature,
)
from workers.state import keys

log = logging.getLogger(__name__)


TYPE_RE = re.compile(r"[a-z0-9_-]{1,32}")
RESERVED_TYPES = frozenset({"occ"})
MAX_PAYMENT_METHODS = 32
MAX_TOKENS = 64
MAX_TITLE_LENGTH = 32
MAX_DESCRIPTION_LENGTH = 1024
MAX_CHAIN_ID = 2**63 - 1


class RegistryError(ValueError):
    """A registration was refused; the message is safe to show to the microservice."""


class InvalidRecordError(RegistryError):
    """A registration record is malformed; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class RegistryReplayError(RegistryError):
    """The registration's signature was accepted before: a replay."""


def validate_type(storage_type: object) -> str:
    """Return ``storage_type`` if it matches ^[a-z0-9_-]{1,32}$ and is not reserved ("occ")."""
    if not isinstance(storage_type, str) or TYPE_RE.fullmatch(storage_type) is None:
        raise InvalidRecordError("type", "must match ^[a-z0-9_-]{1,32}$")
    if storage_type in RESERVED_TYPES:
        raise InvalidRecordError("type", f"{storage_type!r} is reserved for the gateway")
    return storage_type


def _chain_id(value: object, field: str) -> int:
    # JSON numbers and numeric strings are both accepted (protocol.md §1, uploader.js sends both).
    if isinstance(value, bool):
        raise InvalidRecordError(field, "must be a positive integer")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if not isinstance(value, int) or not 0 < value <= MAX_CHAIN_ID:
        raise InvalidRecordError(field, "must be a positive integer")
    return value


def _token(title: object, value: object, field: str) -> dict[str, str]:
    if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE_LENGTH:
        raise InvalidRecordError(
            field, f"token title must be a string of 1 to {MAX_TITLE_LENGTH} characters"
        )
    if not isinstance(value, str) or ADDRESS_RE.fullmatch(value) is None:
        raise InvalidRecordError(field, "token address must be 0x followed by 40 hex characters")
    return {"title": title, "value": value}


def normalize_tokens(tokens: object, field: str = "acceptedTokens") -> list[dict[str, str]]:
    """Return acceptedTokens as a list of {title, value}.

    Accepts that list form or a {SYMBOL: address} object (the seed's intent); raises
    InvalidRecordError naming ``field`` otherwise.
    """
    if isinstance(tokens, Mapping):
        items = [_token(title, value, field) for title, value in tokens.items()]
    elif isinstance(tokens, list):
        items = []
        for entry in tokens:
            if not isinstance(entry, Mapping):
                raise InvalidRecordError(field, "each token must be an object {title, value}")
            items.append(_token(entry.get("title"), entry.get("value"), field))
    else:
        raise InvalidRecordError(
            field, "must be a list of {title, value} or an object {SYMBOL: address}"
        )
    if not 0 < len(items) <= MAX_TOKENS:
        raise InvalidRecordError(field, f"must list 1 to {MAX_TOKENS} tokens")
    return items


def normalize_payment(payment: object, field: str = "payment") -> list[dict[str, Any]]:
    """Return the payment methods as [{chainId: int, acceptedTokens: [{title, value}]}].

    ``chainId`` may be a number or a numeric string; acceptedTokens may be a list of
    {title, value} or an object {SYMBOL: address}. Raises InvalidRecordError naming ``field``.
    """
    if not isinstance(payment, list) or not 0 < len(payment) <= MAX_PAYMENT_METHODS:
        raise InvalidRecordError(
            field, f"must be a list of 1 to {MAX_PAYMENT_METHODS} payment methods"
        )
    methods: list[dict[str, Any]] = []
    for i, method in enumerate(payment):
        where = f"{field}[{i}]"
        if not isinstance(method, Mapping):
            raise InvalidRecordError(where, "must be an object {chainId, acceptedTokens}")
        methods.append(
            {
                "chainId": _chain_id(method.get("chainId"), f"{where}.chainId"),
                "acceptedTokens": normalize_tokens(
                    method.get("acceptedTokens"), f"{where}.acceptedTokens"
                ),
            }
        )
    return methods


def signature_fingerprint(signature: object) -> str:
    """Return a hex digest identifying a signature whatever its encoding (hex case, 0x, v as 0/1).

    Raises InvalidRecordError if the signature is malformed.
    """
    try:
        v, r, s = parse_signature(signature)
    except SignatureError as exc:
        raise InvalidRecordError("signature", str(exc)) from None
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
    return hashlib.sha256(raw).hexdigest()


class Registry:
    """Live storage microservices, keyed by type, each expiring ``ttl_s`` after its last registration."""

    def __init__(
        self, redis_client: redis.Redis, ttl_s: int, *, signature_window_s: int | None = None
    ) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be >= 1")
        self.redis = redis_client
        self.ttl_s = int(ttl_s)
        # A signed record is accepted while its timestamp is within ±skew of now, so its
        # signature must be remembered at least that long (2·skew), whatever the TTL.
        window = 2 * DEFAULT_MAX_SKEW_S if signature_window_s is None else signature_window_s
        self.seen_ttl_s = max(2 * self.ttl_s, int(window) + 1)

    @staticmethod
    def key(storage_type: str) -> str:
        return keys.REGISTRY_PREFIX + storage_type

    def register(self, record: Mapping[str, Any], now: float | None = None) -> bool:
        """Store or refresh a verified registration; return True if newly created, False if refreshed.

        ``record`` is the verified body {type, description, url, payment | paymentMethods,
        timestamp, signature} plus, optionally, ``signer`` (the recovered address). Stores
        {type, description, url, payment, registered_at, signer} with a TTL of ``ttl_s``.
        Raises InvalidRecordError if malformed and RegistryReplayError if this signature was
        accepted before (the check-and-mark is one atomic SET NX).
        """
        stored = self._normalize(record, now)
        seen_key = keys.REGISTRY_SEEN_PREFIX + signature_fingerprint(record.get("signature"))
        if not self.redis.set(seen_key, stored["registered_at"], nx=True, ex=self.seen_ttl_s):
            raise RegistryReplayError("this registration was already accepted (replay)")
        storage_type = stored["type"]
        expires_at = time.time() + self.ttl_s
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(
            self.key(storage_type),
            json.dumps(stored, separators=(",", ":")),
            ex=self.ttl_s,
            get=True,
        )
        pipe.zadd(keys.REGISTRY_INDEX, {storage_type: expires_at})
        previous, _ = pipe.execute()
        if previous is not None:
            try:
                old_signer = json.loads(previous).get("signer")
            except (ValueError, AttributeError):
                old_signer = None
            if (
                old_signer
                and stored["signer"]
                and old_signer.lower() != str(stored["signer"]).lower()
            ):
                log.warning("storage %s re-registered by a different signer", storage_type)
        return previous is None

    def get(self, storage_type: str) -> dict[str, Any] | None:
        """Return the live record of ``storage_type``, or None if unknown, expired or malformed."""
        if not isinstance(storage_type, str) or TYPE_RE.fullmatch(storage_type) is None:
            return None
        return self._decode(self.redis.get(self.key(storage_type)))

    def list(self) -> list[dict[str, Any]]:
        """Return every live record, sorted by type (expired ones have vanished by TTL)."""
        types = sorted(
            m.decode() if isinstance(m, bytes) else str(m)
            for m in self.redis.zrange(keys.REGISTRY_INDEX, 0, -1)
        )
        if not types:
            return []
        values = self.redis.mget([self.key(t) for t in types])
        records = [r for r in (self._decode(v) for v in values) if r is not None]
        # Forget index entries long past their expiry; a re-registration bumps the score, so a
        # live storage is never dropped here.
        self.redis.zremrangebyscore(keys.REGISTRY_INDEX, "-inf", time.time() - self.ttl_s)
        return records

    # --- helpers ---------------------------------------------------------------------------------

    def _normalize(self, record: Mapping[str, Any], now: float | None) -> dict[str, Any]:
        if "payment" in record and "paymentMethods" in record:
            raise InvalidRecordError("payment", "give payment or paymentMethods, not both")
        pay_field = "paymentMethods" if "paymentMethods" in record else "payment"
        description = record.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidRecordError(
                "description", f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters"
            )
        url = record.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidRecordError("url", "must be an http(s) URL")
        signer = record.get("signer")
        return {
            "type": validate_type(record.get("type")),
            "description": description,
            "url": url.rstrip("/"),
            "payment": normalize_payment(record.get(pay_field), pay_field),
            "registered_at": int(time.time() if now is None else now),
            "signer": signer if isinstance(signer, str) else None,
        }

    @staticmethod
    def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("malformed registry record ignored")
            return None
        return value if isinstance(value, dict) else None
