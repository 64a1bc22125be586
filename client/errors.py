"""The client's errors: each is one line for the user; GatewayError keeps the gateway's error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests


class ClientError(Exception):
    """Anything the user should see as one line: missing configuration, bad input, a failed step."""


class NetworkError(ClientError):
    """The gateway or the chain could not be reached or did not answer in time."""


class GatewayError(ClientError):
    """An HTTP error answered by the gateway, in its ``{code, status, message, errors}`` shape."""

    def __init__(
        self,
        http_status: int,
        message: str,
        status: str = "",
        errors: Mapping[str, Any] | None = None,
    ) -> None:
        self.http_status = http_status
        self.status = status
        self.message = message
        self.errors = dict(errors or {})
        super().__init__(format_gateway_error(http_status, status, message, self.errors))

    @classmethod
    def from_response(cls, resp: requests.Response) -> GatewayError:
        """Build from an error response; a body not in the gateway's shape is summarised, not echoed."""
        code = resp.status_code
        reason = resp.reason or ""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            errors = body.get("errors")
            return cls(
                int(body.get("code") or code),
                body["message"],
                str(body.get("status") or reason),
                errors if isinstance(errors, dict) else None,
            )
        return cls(code, "the gateway answered with an unexpected error page", reason)


def _flatten_errors(errors: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(errors, Mapping):
        for key, value in errors.items():
            out += _flatten_errors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(errors, list | tuple):
        texts = [str(e) for e in errors if not isinstance(e, Mapping | list | tuple)]
        if texts:
            out.append(f"{prefix}: {' '.join(texts)}" if prefix else " ".join(texts))
        for e in errors:
            if isinstance(e, Mapping | list | tuple):
                out += _flatten_errors(e, prefix)
    elif errors is not None:
        out.append(f"{prefix}: {errors}" if prefix else str(errors))
    return out


def format_gateway_error(
    code: int, status: str, message: str, errors: Mapping[str, Any] | None
) -> str:
    """One line: ``gateway error 400 Bad Request: Quote expired (files: Missing data...)``."""
    head = f"gateway error {code}" + (f" {status}" if status else "")
    text = f"{head}: {message}"
    details = _flatten_errors(errors or {})
    if details:
        text += " (" + "; ".join(details) + ")"
    return text
