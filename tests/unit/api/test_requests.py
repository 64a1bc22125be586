"""api/requests.py: a refused request's unread body is drained (bounded) so the client reads the answer."""

from __future__ import annotations

import io

from flask import Flask, Response, request

from api.requests import DRAIN_LIMIT, finish_unread_body


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
