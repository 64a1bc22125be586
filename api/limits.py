"""Rate limits (flask-limiter on Redis, shared by every gunicorn worker and host).

- Key: the quote owner's wallet for signed paid calls, the userAddress of signed history
  queries, else the client IP behind exactly one trusted proxy hop (ProxyFix in create_app).
- The upload of an accepted quote (a quote waiting for its files) is not counted against the
  general limit: it is authorised by the owner's signature and nonce, once per quote.
- A refused request gets 429 in the one error shape with `Retry-After` (seconds until the
  window resets); no other answer carries the limiter's headers.
"""

from __future__ import annotations

import time

from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded

from api.deps import runtime
from api.errors import respond
from occ_protocol.formats import is_address, is_quote_id
from occ_protocol.status import Status
from workers.services import paid
from workers.settings import Settings
from workers.state import keys


def client_key() -> str:
    """`wallet:<address>` for signed calls whose signer is known, else `ip:<client ip>`."""
    quote_id = request.args.get("quoteId", "")
    signed = bool(request.args.get("signature"))
    if signed and is_quote_id(quote_id):
        try:
            job = runtime().jobs.get(quote_id.lower())
        except Exception:  # Redis down: fall back to the IP; the view answers 503 itself
            job = None
        if job and job.get("owner"):
            return f"wallet:{job['owner']}"
    address = request.args.get("userAddress", "")
    if signed and is_address(address):
        return f"wallet:{address.lower()}"
    return f"ip:{request.remote_addr or 'unknown'}"


def accepted_quote_upload() -> bool:
    """True for POST /upload?quoteId=<a quote waiting for its files> (exempt from the limit)."""
    quote_id = request.args.get("quoteId", "")
    if request.method != "POST" or request.path != "/upload" or not is_quote_id(quote_id):
        return False
    try:
        return paid.quote_status(runtime(), quote_id) == Status.QUOTED
    except Exception:  # Redis down: count it; the view answers 503 itself
        return False


def init_limiter(app: Flask, settings: Settings) -> Limiter:
    limiter = Limiter(
        client_key,
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri=settings.redis_url,
        strategy="fixed-window",
        headers_enabled=False,  # Retry-After on 429 only (below), not on every answer
        swallow_errors=True,  # a limiter that cannot reach Redis never turns a request into a 500
        key_prefix=keys.RATELIMIT_PREFIX,
    )
    limiter.request_filter(accepted_quote_upload)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(err: RateLimitExceeded) -> Response:
        current = limiter.current_limit
        wait = int(current.reset_at - time.time()) if current else 60
        return respond(
            429,
            f"Rate limit exceeded ({err.description}): retry after {max(wait, 1)} s",
            headers={"Retry-After": str(max(wait, 1))},
        )

    return limiter
