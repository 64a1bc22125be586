"""Library and worker exceptions -> the one JSON error shape `{code, status, message, errors}`."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from occ_storage import errors as lib
from workers.settings import ConfigError
from workers.storage_jobs import LockBusyError

log = logging.getLogger("api.errors")

# Library errors (no HTTP codes there) and what a client gets for them.
LIBRARY_ERRORS: dict[type[Exception], tuple[int, str]] = {
    lib.InvalidHashError: (400, "Malformed hash: expected 64 hexadecimal characters"),
    lib.UnknownFileError: (404, "No such file"),
    lib.InvalidRangeError: (416, "Requested range not satisfiable"),
    lib.InvalidReplicationError: (400, "replication_factor must be between 1 and the node count"),
    lib.ChunkUnavailableError: (503, "A chunk of this file has no readable replica right now"),
    lib.NodeError: (503, "A storage node is unavailable"),
    lib.SketchSaturatedError: (503, "The replication sketch is saturated: increase N_PRIME"),
    lib.SketchMismatchError: (409, "Sketches do not match (key, N' or tau)"),
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


def error_body(code: int, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "status": HTTP_STATUS_CODES.get(code, "Error"),
        "message": message,
    }
    if errors:
        body["errors"] = errors
    return body


def respond(
    code: int,
    message: str,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ResponseReturnValue:
    resp = jsonify(error_body(code, message, errors))
    resp.status_code = code
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def handle_http_exception(error: HTTPException) -> ResponseReturnValue:
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    message = data.get("message") or error.description or HTTP_STATUS_CODES.get(code, "Error")
    errors = data.get("errors") or data.get("messages")
    if isinstance(errors, dict) and set(errors) <= {"json", "form", "query", "files", "headers"}:
        # webargs nests by location; one level is enough for a client
        flat: dict[str, Any] = {}
        for loc_errors in errors.values():
            if isinstance(loc_errors, dict):
                flat.update(loc_errors)
        errors = flat or errors
    if code == 422:
        message = data.get("message") or "Invalid input: " + ", ".join(sorted(errors or {}))
    headers = dict(data.get("headers") or {})
    valid = getattr(error, "valid_methods", None)
    if code == 405 and valid:
        headers["Allow"] = ", ".join(valid)
    return respond(code, message, errors if isinstance(errors, dict) else None, headers)


def register_error_handlers(app: Flask) -> None:
    """One JSON shape for every error: HTTP, validation, library, Redis down, anything else."""

    app.register_error_handler(HTTPException, handle_http_exception)

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> ResponseReturnValue:
        return respond(err.code, err.message, err.errors, err.headers)

    @app.errorhandler(lib.OccStorageError)
    def _library_error(err: lib.OccStorageError) -> ResponseReturnValue:
        for cls in type(err).__mro__:
            if cls in LIBRARY_ERRORS:
                code, message = LIBRARY_ERRORS[cls]
                headers = {"Retry-After": "5"} if code == 503 else None
                return respond(code, message, headers=headers)
        log.warning("unmapped library error: %s", type(err).__name__)
        return respond(500, "Internal error")

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    @app.errorhandler(redis.exceptions.BusyLoadingError)
    def _redis_down(err: Exception) -> ResponseReturnValue:
        log.warning("redis unavailable: %s", type(err).__name__)
        return respond(
            503, "Service temporarily unavailable: state store down", headers={"Retry-After": "5"}
        )

    @app.errorhandler(LockBusyError)
    def _busy(err: LockBusyError) -> ResponseReturnValue:
        return respond(
            409, "The file is busy with a repair or rebalance; retry", headers={"Retry-After": "5"}
        )

    @app.errorhandler(ConfigError)
    def _config_error(err: ConfigError) -> ResponseReturnValue:
        log.error("configuration error: %s", err)
        return respond(500, "Server misconfigured")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> ResponseReturnValue:
        # Never a stack trace to the client; the log keeps the type for the operator.
        log.exception("unhandled %s", type(err).__name__)
        return respond(500, "Internal error")
