"""api/requests.py: a refused request's unread body is drained (bounded) so the client reads the
answer; log records made in a request carry its X-Request-Id."""

from __future__ import annotations

import io
import json
import logging

from flask import Flask, Response, request

from api.requests import DRAIN_LIMIT, finish_unread_body, tag_request_id
from workers.logs import JsonFormatter


def test_refused_request_body_is_drained() -> None:
    app = Flask(__name__)
    with app.test_request_context("/upload", method="POST", data=b"x" * 300_000):
        resp = finish_unread_body(Response(status=409))
        assert request.stream.read() == b""  # everything was read
        assert "Connection" not in resp.headers


def test_successful_answers_and_gets_are_left_alone() -> None:
    app = Flask(__name__)
    with app.test_request_context("/upload", method="POST", data=b"abc"):
        finish_unread_body(Response(status=200))
        assert request.stream.read() == b"abc"


def test_a_body_above_the_bound_is_not_read_and_the_connection_closes() -> None:
    app = Flask(__name__)
    environ = {"wsgi.input": io.BytesIO(b"y" * 10), "CONTENT_LENGTH": str(DRAIN_LIMIT + 1)}
    with app.test_request_context("/upload", method="POST", environ_overrides=environ):
        resp = finish_unread_body(Response(status=409))
        assert resp.headers["Connection"] == "close"
        assert request.environ["wsgi.input"].read() == b"y" * 10


def test_log_records_carry_a_plain_request_id_only() -> None:
    app = Flask(__name__)

    def logged(request_id: str | None) -> dict[str, object]:
        headers = {} if request_id is None else {"X-Request-Id": request_id}
        with app.test_request_context("/files", headers=headers):
            record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
            assert tag_request_id(record) is True  # a filter that only tags, never drops
            return dict(json.loads(JsonFormatter().format(record)))

    assert logged("abc-123")["request_id"] == "abc-123"
    for bad in ('bad" id', "x" * 129, "", None):
        assert "request_id" not in logged(bad), bad
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "outside a request", None, None)
    assert tag_request_id(record) and not hasattr(record, "request_id")
