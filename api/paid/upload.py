"""POST /upload?quoteId&nonce&signature: the paid upload (called by api/storage/routes.py)."""

from __future__ import annotations

from typing import IO

from flask import Response, jsonify, request

from api.deps import runtime
from api.paid import load, paid_errors
from api.paid.schemas import SignedQuerySchema
from workers import paid


def _parts() -> list[tuple[str | None, IO[bytes]]]:
    """Every file part in body order, whatever its name (Ocean's client sends file1, file2, ...)."""
    return [(f.filename, f.stream) for _, f in request.files.items(multi=True)]


def _enqueue(quote_id: str) -> None:
    from workers.paid_tasks import process_payment

    process_payment.apply_async(args=[quote_id])


def paid_upload() -> Response:
    """Check the quote, signature and nonce, stage the files durably, queue the payment; 200 {message}."""
    q = load(SignedQuerySchema(), request.args.to_dict(), "upload request")
    with paid_errors():
        result = paid.accept_upload(
            runtime(), q["quoteId"], q["nonce"], q["signature"], _parts, _enqueue
        )
    return jsonify(result)
