"""Paid uploads (Ocean's storage-backend protocol): /, getQuote, upload, getStatus, getLink, getHistory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import marshmallow as ma

from api.errors import ApiError
from workers import paid

# workers.paid errors -> (HTTP status, extra headers); the messages are safe for clients.
ERROR_CODES: dict[type[paid.PaidError], tuple[int, dict[str, str]]] = {
    paid.QuoteRequestError: (400, {}),
    paid.QuoteExpiredError: (400, {}),
    paid.MalformedSignatureError: (400, {}),
    paid.FileMismatchError: (400, {}),
    paid.WrongSignerError: (403, {}),
    paid.UnknownQuoteError: (404, {}),
    paid.QuoteUsedError: (409, {}),
    paid.NonceUsedError: (409, {}),
    paid.NotReadyError: (409, {}),
    paid.StorageUnavailableError: (503, {"Retry-After": "30"}),
}


@contextlib.contextmanager
def paid_errors() -> Iterator[None]:
    """Turn workers.paid errors into ApiError (the one error shape)."""
    try:
        yield
    except paid.PaidError as exc:
        code, headers = 500, dict[str, str]()
        for cls in type(exc).__mro__:
            if cls in ERROR_CODES:
                code, headers = ERROR_CODES[cls]
                break
        errors = None
        if isinstance(exc, paid.QuoteRequestError):
            errors = {exc.field: [exc.reason]}
            message = f"Invalid quote request: {exc}"
        else:
            message = str(exc)
        raise ApiError(code, message, errors, headers) from None


def first_error(messages: Any, prefix: str = "") -> tuple[str, str]:
    """(field path like files[0].length, message) of the first marshmallow error."""
    if isinstance(messages, dict) and messages:
        key = sorted(messages, key=lambda k: (isinstance(k, str), str(k)))[0]
        path = (
            f"{prefix}[{key}]"
            if isinstance(key, int)
            else f"{prefix}.{key}"
            if prefix
            else str(key)
        )
        return first_error(messages[key], path)
    if isinstance(messages, list) and messages:
        if isinstance(messages[0], str):
            return prefix or "body", messages[0]
        return first_error(messages[0], prefix)
    return prefix or "body", str(messages)


def load(schema: ma.Schema, data: Any, what: str) -> dict[str, Any]:
    """Validate with marshmallow; 400 whose message names the first bad field."""
    try:
        result: dict[str, Any] = schema.load(data)
    except ma.ValidationError as err:
        field, reason = first_error(err.messages)
        errors = err.messages if isinstance(err.messages, dict) else {"body": err.messages}
        raise ApiError(400, f"Invalid {what}: {field}: {reason}", _jsonable(errors)) from None
    return result


def _jsonable(errors: Any) -> Any:
    if isinstance(errors, dict):
        return {str(k): _jsonable(v) for k, v in errors.items()}
    if isinstance(errors, list):
        return [_jsonable(v) for v in errors]
    return errors
