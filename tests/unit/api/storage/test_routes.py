"""api/storage: bad input is a 400 in the one shape, before any state is touched."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask


def assert_400(resp: Any, field: str) -> dict[str, Any]:
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body: dict[str, Any] = resp.get_json()
    assert body["code"] == 400 and body["status"] == "Bad Request"
    assert field in body["message"], body
    return body


@pytest.mark.parametrize("path", ["/download/xyz", "/verify/" + "g" * 64, "/download/" + "a" * 63])
def test_malformed_hash(app: Flask, path: str) -> None:
    assert_400(app.test_client().get(path), "hash")


@pytest.mark.parametrize("query", ["page=0", "per_page=1001", "page=x"])
def test_bad_paging(app: Flask, query: str) -> None:
    body = assert_400(app.test_client().get(f"/files?{query}"), query.split("=")[0])
    assert body["message"].startswith("Invalid page: ")


def test_paid_upload_needs_nonce_and_signature(app: Flask) -> None:
    client = app.test_client()
    body = assert_400(client.post(f"/upload?quoteId={'a' * 32}"), "nonce")
    assert body["message"].startswith("Invalid upload request: ")
    assert_400(client.post(f"/upload?quoteId={'a' * 32}&nonce=1"), "signature")
    assert_400(client.post("/upload?quoteId=nothex&nonce=1&signature=0x1"), "quoteId")
    assert_400(client.post(f"/upload?quoteId={'a' * 32}&nonce=12a&signature=0x1"), "nonce")


@pytest.mark.parametrize("r", ["three", "0", "99"])
def test_direct_upload_replication_factor(app: Flask, r: str) -> None:
    resp = app.test_client().post(
        "/upload",
        data={"file": (io.BytesIO(b"abc"), "a.bin"), "replication_factor": r},
        content_type="multipart/form-data",
    )
    assert_400(resp, "replication_factor")


def test_direct_upload_without_file_part(app: Flask) -> None:
    resp = app.test_client().post("/upload", data={"x": "1"}, content_type="multipart/form-data")
    assert_400(resp, "file")


def test_rebalance_needs_an_integer(app: Flask) -> None:
    resp = app.test_client().post(f"/rebalance/{'a' * 64}", json={"replication_factor": "2"})
    body = assert_400(resp, "replication_factor")
    assert body["message"].startswith("Invalid rebalance request: replication_factor: ")


def test_status_refresh_flag_is_validated(app: Flask) -> None:
    assert_400(app.test_client().get("/status?refresh=perhaps"), "refresh")


def test_state_store_down_is_a_503_with_retry_after(app: Flask) -> None:
    resp = app.test_client().get(f"/jobs/{'a' * 32}")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.get_json()["code"] == 503


def test_malformed_job_id(app: Flask) -> None:
    resp = app.test_client().get(f"/jobs/{'A' * 32}")
    assert resp.status_code == 400 and resp.get_json()["code"] == 400
