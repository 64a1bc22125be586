"""api/private: its own OpenAPI document; malformed records and tokens in the one shape."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from api.private import create_private_app
from workers.settings import Settings

RECORD = {
    "type": "ipfs",
    "description": "d",
    "url": "https://ms.example.com",
    "payment": [{"chainId": 1, "acceptedTokens": {"OCEAN": "0x" + "11" * 20}}],
}


@pytest.fixture
def private(settings: Settings) -> Flask:
    app = create_private_app(settings)
    app.config["TESTING"] = True
    return app


def test_private_api_serves_its_own_document(private: Flask) -> None:
    spec = private.test_client().get("/openapi.json").get_json()
    assert set(spec["paths"]) == {"/register", "/staged/{quote_id}/{index}", "/health"}
    register = spec["paths"]["/register"]["post"]["responses"]
    for code in ("400", "401", "403", "409"):
        ref = register[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/Error")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "Bad Type"}, "type"),
        ({"url": "ftp://x.example.com"}, "url"),
        ({"timestamp": "1700000000"}, "timestamp"),
        ({"payment": []}, "payment"),
    ],
)
def test_malformed_registration_names_the_field(
    private: Flask, change: dict[str, Any], field: str
) -> None:
    body = {**RECORD, "timestamp": int(time.time()), "signature": "0x00", **change}
    resp = private.test_client().post("/register", json=body)
    assert resp.status_code == 400
    answer = resp.get_json()
    assert answer["message"].startswith(f"Malformed registration: {field}"), answer


def test_unsigned_registration_is_401(private: Flask) -> None:
    body = {**RECORD, "timestamp": int(time.time())}
    resp = private.test_client().post("/register", json=body)
    assert resp.status_code == 401 and resp.get_json()["code"] == 401


def test_non_object_body_is_400(private: Flask) -> None:
    resp = private.test_client().post("/register", data="[]", content_type="application/json")
    assert resp.status_code == 400 and "body" in resp.get_json()["message"]


@pytest.mark.parametrize(
    "query", ["", "?token=" + "0" * 64, "?expires=-&token=" + "0" * 64, "?expires=1&token=zz"]
)
def test_malformed_staged_token_is_403(private: Flask, query: str) -> None:
    resp = private.test_client().get(f"/staged/{'a' * 32}/0{query}")
    assert resp.status_code == 403 and resp.get_json()["code"] == 403


def test_malformed_staged_quote_is_404(private: Flask) -> None:
    resp = private.test_client().get(f"/staged/nothex/0?expires=1&token={'0' * 64}")
    assert resp.status_code == 404 and resp.get_json()["code"] == 404
