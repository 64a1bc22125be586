"""Rate limits in Redis (shared by every gunicorn worker and host), per wallet when signed, else per IP."""

from __future__ import annotations

import re

from flask import Flask, request
from flask_limiter import Limiter

from api.deps import runtime
from workers.settings import Settings

_QUOTE = re.compile(r"^[0-9a-fA-F]{32}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def client_key() -> str:
    """The quote owner's wallet for signed paid requests, the userAddress of history queries,
    else the client IP as seen behind exactly one trusted proxy hop (ProxyFix)."""
    quote_id = request.args.get("quoteId", "")
    if request.args.get("signature") and _QUOTE.match(quote_id):
        try:
            job = runtime().jobs.get(quote_id.lower())
        except Exception:  # Redis down: fall back to the IP; the view answers 503 itself
            job = None
        if job and job.get("owner"):
            return f"wallet:{job['owner']}"
    address = request.args.get("userAddress", "")
    if request.args.get("signature") and _ADDRESS.match(address):
        return f"wallet:{address.lower()}"
    return f"ip:{request.remote_addr or 'unknown'}"


def init_limiter(app: Flask, settings: Settings) -> Limiter:
    return Limiter(
        client_key,
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri=settings.redis_url,
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,  # a limiter that cannot reach Redis never turns a request into a 500
        key_prefix="occ:ratelimit",
    )
