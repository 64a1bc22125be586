"""Request class: uploaded files stream to the staging directory, and a body must be whole."""

from __future__ import annotations

import io
import logging
import re
import tempfile
from typing import IO, cast

from flask import Request, Response, current_app, has_request_context, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream


class _WholeBody(io.RawIOBase):
    """The body stream, failing with ClientDisconnected if it ends before Content-Length.

    gunicorn sets wsgi.input_terminated, so werkzeug trusts it to end the input and does not
    check the length; gunicorn then reports a client that hangs up midway as a normal end of
    the body. Without this check a cut-off upload would be stored as a (shorter) file.
    """

    def __init__(self, inner: IO[bytes], length: int) -> None:
        self._inner = inner
        self._length = length
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(min(len(buffer), self._left)) if self._left else b""
        n = len(data)
        if n == 0 and self._left and len(buffer):
            got = self._length - self._left
            raise ClientDisconnected(
                f"The request body ended after {got} of {self._length} bytes (Content-Length)."
            )
        buffer[:n] = data
        self._left -= n
        return n


class StagingRequest(Request):
    """Multipart file parts are written to STORAGE_DIR/staging (same filesystem as the nodes)."""

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length  # MAX_UPLOAD_SIZE + 1 (see create_app)
        length = self.content_length
        if length is not None and limit is not None and length >= limit:
            raise RequestEntityTooLarge()
        inner = get_input_stream(self.environ, max_content_length=limit)
        return inner if length is None else cast(IO[bytes], _WholeBody(inner, length))

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        staging = current_app.extensions["occ"].settings.staging_dir
        # delete=True: the temp file vanishes when closed, including on errors
        return tempfile.NamedTemporaryFile(dir=staging, prefix=".upload-", delete=True)


# A refused request whose body was not read (409 nonce reuse, 401, 403 ... answered before the
# multipart parse) is drained up to this many bytes before the answer, so that a client that
# writes its whole body before reading (Ocean's uploader.js, http.client) reads the error
# instead of failing with EPIPE / ECONNRESET when the server closes on unread data.
DRAIN_LIMIT = 16 * 1024 * 1024
DRAIN_BLOCK = 64 * 1024


def finish_unread_body(response: Response) -> Response:
    """after_request: drain the rest of a refused request's body (bounded); else close."""
    if response.status_code < 400 or request.method not in {"POST", "PUT", "PATCH"}:
        return response
    length = request.content_length
    if length is None or length > DRAIN_LIMIT:
        # chunked or too large to read for nothing: the connection cannot be reused
        response.headers["Connection"] = "close"
        return response
    left = length
    try:
        # request.stream knows how much of the body the view consumed (werkzeug's LimitedStream,
        # _WholeBody above, or gunicorn's own length-bounded input)
        while left > 0:
            block = request.stream.read(min(DRAIN_BLOCK, left))
            if not block:
                break
            left -= len(block)
    except Exception:  # the client went away, or the body is refused as too large
        response.headers["Connection"] = "close"
    return response


REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # what nginx passes on (nginx.conf's map)


def tag_request_id(record: logging.LogRecord) -> bool:
    """Logging filter: a record made while serving a request carries its X-Request-Id (set by
    nginx, logged by gunicorn's access log too) when it is a plain token; anything else is left
    out, so a client cannot write into the log through the header."""
    if has_request_context() and not hasattr(record, "request_id"):
        value = request.headers.get("X-Request-Id", "")
        if REQUEST_ID.fullmatch(value):
            record.request_id = value
    return True
