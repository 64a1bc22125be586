"""The one error table and the one JSON error shape `{code, status, message, errors}`.

Every exception a view lets through is answered from ERROR_TABLE (library, worker, paid-flow and
state-store errors), from its HTTP code (werkzeug, webargs validation, rate limits) or as a 500
without details. Validation errors of any schema read through `@blp.arguments` become a 400 whose
message names the first bad field (`first_error`), prefixed by the schema's `error_prefix`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from occ_storage import errors as lib
from workers.services import paid
from workers.settings import ConfigError
from workers.state.locks import LockBusyError

log = logging.getLogger("api.errors")


@dataclass(frozen=True)
class ErrorSpec:
    """How a client sees an exception: HTTP code, message (None: `str(exc)`, safe by contract)."""

    code: int
    message: str | None = None
    retry_after: int | None = None


# Exception class -> answer; the most specific class in the exception's MRO wins.
ERROR_TABLE: dict[type[BaseException], ErrorSpec] = {
    # occ_storage (no HTTP codes there)
    lib.InvalidHashError: ErrorSpec(400, "Malformed hash: expected 64 hexadecimal characters"),
    lib.UnknownFileError: ErrorSpec(404, "No such file"),
    lib.InvalidRangeError: ErrorSpec(416, "Requested range not satisfiable"),
    lib.InvalidReplicationError: ErrorSpec(
        400, "replication_factor must be between 1 and the node count"
    ),
    lib.ChunkUnavailableError: ErrorSpec(
        503, "A chunk of this file has no readable replica right now", retry_after=5
    ),
    lib.NodeError: ErrorSpec(503, "A storage node is unavailable", retry_after=5),
    lib.SketchSaturatedError: ErrorSpec(
        503, "The replication sketch is saturated: increase N_PRIME", retry_after=5
    ),
    lib.SketchMismatchError: ErrorSpec(409, "Sketches do not match (key, N' or tau)"),
    lib.OccStorageError: ErrorSpec(500, "Internal error"),
    # the paid flow (workers.services.paid): messages are written for clients
    paid.QuoteRequestError: ErrorSpec(400, "Invalid quote request: {exc}"),
    paid.QuoteExpiredError: ErrorSpec(400),
    paid.MalformedSignatureError: ErrorSpec(400),
    paid.FileMismatchError: ErrorSpec(400),
    paid.WrongSignerError: ErrorSpec(403),
    paid.UnknownQuoteError: ErrorSpec(404),
    paid.QuoteUsedError: ErrorSpec(409),
    paid.NonceUsedError: ErrorSpec(409),
    paid.NotReadyError: ErrorSpec(409),
    paid.StorageUnavailableError: ErrorSpec(503, retry_after=30),
    paid.PaidError: ErrorSpec(400),
    # state and configuration
    LockBusyError: ErrorSpec(409, "The file is busy with a repair or rebalance; retry", 5),
    redis.exceptions.ConnectionError: ErrorSpec(
        503, "Service temporarily unavailable: state store down", 5
    ),
    redis.exceptions.TimeoutError: ErrorSpec(
        503, "Service temporarily unavailable: state store down", 5
    ),
    redis.exceptions.BusyLoadingError: ErrorSpec(
        503, "Service temporarily unavailable: state store down", 5
    ),
    ConfigError: ErrorSpec(500, "Server misconfigured"),
}


class ApiError(Exception):
    """An error raised by a view with an explicit status and message."""

    def __init__(
        self,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class ErrorSchema(ma.Schema):
    """The one error shape (every 4xx and 5xx answer)."""

    code = ma.fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = ma.fields.String(required=True, metadata={"description": "HTTP reason phrase"})
    message = ma.fields.String(required=True, metadata={"description": "What went wrong"})
    errors = ma.fields.Dict(metadata={"description": "Per-field messages (validation errors)"})


def error_body(code: int, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "status": HTTP_STATUS_CODES.get(code, "Error"),
        "message": message,
    }
    if errors:
        body["errors"] = _jsonable(errors)
    return body


def respond(
    code: int,
    message: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    resp = jsonify(error_body(code, message, errors))
    resp.status_code = code
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def first_error(messages: Any, prefix: str = "") -> tuple[str, str]:
    """(field path like files[0].length, message) of the first marshmallow error."""
    if isinstance(messages, dict) and messages:
        key = sorted(messages, key=lambda k: (isinstance(k, str), str(k)))[0]
        if isinstance(key, int):
            path = f"{prefix}[{key}]"
        else:
            path = f"{prefix}.{key}" if prefix else str(key)
        return first_error(messages[key], path)
    if isinstance(messages, list) and messages:
        if isinstance(messages[0], str):
            return prefix or "body", messages[0]
        return first_error(messages[0], prefix)
    return prefix or "body", str(messages)


def validation_message(schema: Any, messages: Any) -> str:
    """`<schema's error_prefix>: <first field>: <its message>`."""
    prefix = getattr(schema, "error_prefix", "Invalid input")
    if messages == {"_schema": ["Invalid input type."]} or messages == ["Invalid input type."]:
        return f"{prefix}: body: must be a JSON object"
    field, reason = first_error(messages)
    return f"{prefix}: {field}: {reason}"


def _jsonable(errors: Any) -> Any:
    if isinstance(errors, dict):
        return {str(k): _jsonable(v) for k, v in errors.items()}
    if isinstance(errors, list):
        return [_jsonable(v) for v in errors]
    return errors


def _flatten_locations(errors: Any) -> Any:
    """webargs nests messages by location ({"query": {...}}); one level is enough for a client."""
    locations = {"json", "form", "query", "querystring", "files", "headers", "json_or_form"}
    if isinstance(errors, dict) and errors and set(errors) <= locations:
        flat: dict[str, Any] = {}
        for loc_errors in errors.values():
            if isinstance(loc_errors, dict):
                flat.update(loc_errors)
            else:
                flat.setdefault("_schema", loc_errors)
        return flat
    return errors


def handle_http_exception(error: HTTPException) -> Response:
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = _flatten_locations(data.get("errors") or data.get("messages"))
    if "schema" in data and errors:  # a webargs validation error
        message = validation_message(data["schema"], errors)
    else:
        message = data.get("message") or error.description or HTTP_STATUS_CODES.get(code, "Error")
    headers = dict(data.get("headers") or {})
    valid = getattr(error, "valid_methods", None)
    if code == 405 and valid:
        headers["Allow"] = ", ".join(valid)
    return respond(code, message, errors if isinstance(errors, dict) else None, headers)


def spec_for(exc: BaseException) -> ErrorSpec | None:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return None


def handle_exception(exc: Exception) -> Response:
    """Answer any exception from ERROR_TABLE, else 500 (never a stack trace to the client)."""
    if isinstance(exc, ApiError):
        return respond(exc.code, exc.message, exc.errors, exc.headers)
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    spec = spec_for(exc)
    if spec is None:
        log.exception("unhandled %s", type(exc).__name__)
        return respond(500, "Internal error")
    if spec.code >= 500:
        log.warning("%s answered %d: %s", type(exc).__name__, spec.code, exc)
    message = str(exc) if spec.message is None else spec.message.format(exc=exc)
    field, reason = getattr(exc, "field", None), getattr(exc, "reason", None)
    errors = {field: [reason]} if isinstance(field, str) and isinstance(reason, str) else None
    headers = {"Retry-After": str(spec.retry_after)} if spec.retry_after else None
    return respond(spec.code, message, errors, headers)


def register_error_handlers(app: Flask) -> None:
    """One JSON shape for every error: HTTP, validation, library, Redis down, anything else."""
    app.register_error_handler(HTTPException, handle_http_exception)  # over flask-smorest's
    app.register_error_handler(Exception, handle_exception)
