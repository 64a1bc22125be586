"""api/errors.py: the one error table, the one shape, the first validation error."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask

from api.errors import ERROR_TABLE, ApiError, first_error, register_error_handlers, spec_for
from occ_storage import errors as lib
from workers.services import paid
from workers.settings import ConfigError
from workers.state.locks import LockBusyError


def app_raising(exc: BaseException) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, PROPAGATE_EXCEPTIONS=False)
    register_error_handlers(app)

    @app.get("/boom")
    def boom() -> Any:
        raise exc

    return app


def assert_shape(body: dict[str, Any], code: int) -> None:
    assert set(body) <= {"code", "status", "message", "errors"}
    assert body["code"] == code and isinstance(body["status"], str) and body["message"]


@pytest.mark.parametrize(
    ("exc", "code", "message", "retry_after"),
    [
        (lib.UnknownFileError("x"), 404, "No such file", None),
        (lib.InvalidRangeError("x"), 416, "Requested range not satisfiable", None),
        (lib.ChunkUnavailableError("x"), 503, None, "5"),
        (lib.SketchMismatchError("x"), 409, None, None),
        (paid.UnknownQuoteError("No such quote"), 404, "No such quote", None),
        (paid.QuoteExpiredError("Quote expired"), 400, "Quote expired", None),
        (paid.WrongSignerError("not the owner"), 403, "not the owner", None),
        (paid.NonceUsedError("Nonce already used"), 409, "Nonce already used", None),
        (paid.NotReadyError(101), 409, "Files are not stored yet (status 101)", None),
        (paid.StorageUnavailableError("gone"), 503, "gone", "30"),
        (LockBusyError("held"), 409, None, "5"),
        (redis.exceptions.ConnectionError("down"), 503, None, "5"),
        (ConfigError("secret detail"), 500, "Server misconfigured", None),
    ],
)
def test_table_maps_exceptions_to_the_one_shape(
    exc: Exception, code: int, message: str | None, retry_after: str | None
) -> None:
    resp = app_raising(exc).test_client().get("/boom")
    assert resp.status_code == code
    body = resp.get_json()
    assert_shape(body, code)
    if message is not None:
        assert body["message"] == message
    assert resp.headers.get("Retry-After") == retry_after


def test_quote_request_error_names_the_field() -> None:
    resp = app_raising(paid.QuoteRequestError("files[0].length", "too big")).test_client()
    body = resp.get("/boom").get_json()
    assert body["message"] == "Invalid quote request: files[0].length: too big"
    assert body["errors"] == {"files[0].length": ["too big"]}


def test_most_specific_class_wins_and_every_paid_error_is_mapped() -> None:
    class Narrower(paid.NonceUsedError):
        pass

    assert spec_for(Narrower("x")) == ERROR_TABLE[paid.NonceUsedError]
    for cls in vars(paid).values():
        if isinstance(cls, type) and issubclass(cls, paid.PaidError):
            assert cls in ERROR_TABLE, cls


def test_unknown_exception_is_a_500_without_details() -> None:
    resp = app_raising(RuntimeError("password=hunter2")).test_client().get("/boom")
    assert resp.status_code == 500
    assert resp.get_json() == {
        "code": 500,
        "status": "Internal Server Error",
        "message": "Internal error",
    }


def test_api_error_keeps_its_headers_and_errors() -> None:
    exc = ApiError(401, "key please", {"auth": ["missing"]}, {"WWW-Authenticate": "Bearer"})
    resp = app_raising(exc).test_client().get("/boom")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert resp.get_json()["errors"] == {"auth": ["missing"]}


def test_http_errors_use_the_shape_and_405_lists_allow() -> None:
    client = app_raising(ValueError()).test_client()
    missing = client.get("/nowhere")
    assert_shape(missing.get_json(), 404)
    wrong = client.delete("/boom")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert_shape(wrong.get_json(), 405)


def test_first_error_paths() -> None:
    assert first_error({"files": {1: {"length": ["bad"]}}}) == ("files[1].length", "bad")
    assert first_error({"payment": {"chainId": ["no"]}, "type": ["x"]}) == ("payment.chainId", "no")
    assert first_error({"files": {0: ["a"], 2: ["b"]}}) == ("files[0]", "a")
    assert first_error(["top"]) == ("body", "top")
    assert first_error({}) == ("body", "{}")
