"""Bearer API keys for direct uploads, deletes and rebalances (only when API_KEYS is set)."""

from __future__ import annotations

import hmac

from flask import request

from api.deps import runtime
from api.errors import ApiError


def require_api_key() -> None:
    keys = runtime().settings.api_keys
    if not keys:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    # compare against every key in constant time, without short-circuiting on the first match
    ok = scheme.lower() == "bearer" and bool(token)
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.encode(), key.encode())
    if not (ok and matched):
        raise ApiError(
            401,
            "A valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="occ"'},
        )
