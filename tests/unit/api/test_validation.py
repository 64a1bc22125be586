"""api/validation.py: the one parser, whole-string formats, documented errors."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import Flask

from api.errors import register_error_handlers
from api.validation import PARSER, FullMatch, format_field
from occ_protocol.formats import ADDRESS_RE, NONCE_RE


class NonceSchema(ma.Schema):
    error_prefix = "Invalid thing"
    nonce = format_field(NONCE_RE, "must be digits", required=True)


def parse_app() -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True)
    register_error_handlers(app)

    @app.route("/p", methods=["GET", "POST"])
    def parse() -> Any:
        return PARSER.parse(NonceSchema, location="query")

    return app


@pytest.mark.parametrize("value", ["1", "1700000000", "1" * 13])
def test_format_field_accepts_whole_matches(value: str) -> None:
    assert NonceSchema().load({"nonce": value}) == {"nonce": value}


@pytest.mark.parametrize("value", ["", "12a", "1" * 14, "5\n", " 5"])
def test_format_field_rejects_partial_matches(value: str) -> None:
    with pytest.raises(ma.ValidationError) as err:
        NonceSchema().load({"nonce": value})
    assert err.value.messages == {"nonce": ["must be digits"]}


def test_format_field_publishes_an_anchored_pattern() -> None:
    field = format_field(ADDRESS_RE, "bad")
    assert field.metadata["pattern"] == "^0x[0-9a-fA-F]{40}$"
    assert isinstance(field.validators[0], FullMatch)


def test_validation_error_is_a_400_naming_the_field() -> None:
    resp = parse_app().test_client().get("/p?nonce=abc")
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["code"] == 400 and body["status"] == "Bad Request"
    assert body["message"] == "Invalid thing: nonce: must be digits"
    assert body["errors"] == {"nonce": ["must be digits"]}  # not nested by location


def test_post_json_body_completes_the_query_string() -> None:
    client = parse_app().test_client()
    assert client.post("/p", json={"nonce": "12"}).get_json() == {"nonce": "12"}
    assert client.post("/p?nonce=7", json={"nonce": "12"}).get_json() == {"nonce": "7"}
    assert client.post("/p", json={"nonce": 12}).status_code == 400  # JSON numbers are not taken
    assert client.get("/p", json={"nonce": "12"}).status_code == 400  # GET: the query only


def test_non_object_json_body_is_named() -> None:
    app = Flask(__name__)
    register_error_handlers(app)

    @app.post("/j")
    def j() -> Any:
        return PARSER.parse(NonceSchema, location="json")

    resp = app.test_client().post("/j", data="[1]", content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["message"] == "Invalid thing: body: must be a JSON object"
    bad = app.test_client().post("/j", data="{", content_type="application/json")
    assert bad.status_code == 400 and bad.get_json()["code"] == 400
