"""POST /upload?quoteId&nonce&signature: the paid upload (called by api/storage/routes.py)."""

from __future__ import annotations

from typing import IO, Any

from flask import Response, jsonify, request

from api.deps import runtime
from workers.services import paid


def _parts() -> list[tuple[str | None, IO[bytes]]]:
    """Every file part in body order, whatever its name (Ocean's client sends file1, file2, ...)."""
    return [(f.filename, f.stream) for _, f in request.files.items(multi=True)]


def paid_upload(q: dict[str, Any]) -> Response:
    """Check the quote, signature and nonce, stage the files durably, queue the payment; 200 {message}.

    The body is parsed only once the quote, signature and nonce are accepted (`_parts`)."""
    result = paid.accept_upload(runtime(), q["quoteId"], q["nonce"], q["signature"], _parts)
    return jsonify(result)
