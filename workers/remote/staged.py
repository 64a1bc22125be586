"""Signed URLs of staged files: a microservice fetches a paid upload's bytes from the private API.

The HMAC key is derived from the runtime's secret key, which the caller passes in.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

STAGED_KEY_CONTEXT = b"occ staged-file url v1"
STAGED_URL_TTL_S = 24 * 3600  # as long as a paid upload waits for its microservice


def staged_key(master_key: bytes) -> bytes:
    """Return the HMAC key of staged-file URLs, derived from the runtime's secret key.

    Derived (HMAC of a fixed context) so that it is independent of the sketch PRF that uses the
    same secret.
    """
    return hmac.new(master_key, STAGED_KEY_CONTEXT, hashlib.sha256).digest()


def staged_token(quote_id: str, index: int, expires: int, key: bytes) -> str:
    """Return the hex HMAC-SHA256 of f"{quote_id}:{index}:{expires}" that authorises fetching one
    staged file until the unix time ``expires``.

    ``key`` is the runtime's secret key.
    """
    message = f"{quote_id}:{int(index)}:{int(expires)}".encode()
    return hmac.new(staged_key(key), message, hashlib.sha256).hexdigest()


def check_staged_token(
    quote_id: str,
    index: int,
    expires: int,
    token: str,
    key: bytes,
    now: float | None = None,
) -> bool:
    """Return True if ``token`` authorises staged file ``index`` of ``quote_id`` and ``expires``
    has not passed (constant-time comparison)."""
    if not isinstance(token, str) or not token.isascii():
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(staged_token(quote_id, index, expires, key), token.lower())


def staged_file_url(
    base_url: str,
    quote_id: str,
    index: int,
    key: bytes,
    ttl_s: float = STAGED_URL_TTL_S,
    now: float | None = None,
) -> str:
    """Return the private-API URL a microservice fetches staged file ``index`` of ``quote_id`` from,
    valid for ``ttl_s`` seconds.

    ``base_url`` is the private API's base as the microservice reaches it (e.g. http://gateway:5001).
    """
    expires = int((time.time() if now is None else now) + ttl_s)
    token = staged_token(quote_id, index, expires, key)
    return (
        f"{base_url.rstrip('/')}/staged/{quote(quote_id, safe='')}/{int(index)}"
        f"?expires={expires}&token={token}"
    )
