"""api/__init__.py: blueprints from one list, and the OpenAPI document they make."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from api import PUBLIC_BLUEPRINTS

ERROR_REF = {"$ref": "#/components/schemas/Error"}
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture
def spec(app: Flask) -> dict[str, Any]:
    doc: dict[str, Any] = app.test_client().get("/openapi.json").get_json()
    return doc


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, ops in spec["paths"].items() for m, op in ops.items() if m in METHODS]


def test_every_listed_blueprint_is_registered(app: Flask) -> None:
    names = {name.split(".")[1] for name in PUBLIC_BLUEPRINTS}
    assert names <= set(app.blueprints)


def test_every_error_answer_references_the_error_schema(spec: dict[str, Any]) -> None:
    seen = set()
    for path, method, op in operations(spec):
        assert "429" in op["responses"], (path, method)
        for code, resp in op["responses"].items():
            if code == "default" or int(code) < 400:
                continue
            seen.add(int(code))
            schema = resp["content"]["application/json"]["schema"]
            assert schema == ERROR_REF, (path, method, code)
    assert {400, 401, 403, 404, 409, 413, 429, 503} <= seen
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "status", "message"}


def test_health_status_and_jobs_have_200_schemas(spec: dict[str, Any]) -> None:
    for path in ("/health", "/status", "/jobs/{job_id}"):
        content = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert "$ref" in content["application/json"]["schema"], path
    status = spec["components"]["schemas"]["NetworkStatus"]
    assert status.get("additionalProperties", True) is not False  # new fields validate
    for name in ("network", "replication", "sketch"):
        assert status["properties"][name]["type"] == "object"
        assert status["properties"][name].get("additionalProperties", True) is not False


def test_upload_documents_both_forms(spec: dict[str, Any]) -> None:
    op = spec["paths"]["/upload"]["post"]
    assert set(op["tags"]) == {"storage", "paid"}
    assert {p["name"] for p in op["parameters"]} == {"quoteId", "nonce", "signature"}
    assert "personal_sign" in op["description"] and "sha256" in op["description"]
    body = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "file" in body["properties"] and body["additionalProperties"]["format"] == "binary"
    answers = op["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert {a["$ref"].rsplit("/", 1)[1] for a in answers} == {"UploadResult", "UploadAccepted"}
    assert set(spec["components"]["schemas"]["UploadAccepted"]["properties"]) == {
        "message",
        "quoteId",
    }


def test_keyed_operations_declare_the_bearer_scheme(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    keyed = {(p, m) for p, m, op in operations(spec) if {"bearer": []} in op.get("security", [])}
    assert keyed == {
        ("/upload", "post"),
        ("/upload", "put"),
        ("/files/{file_hash}", "delete"),
        ("/rebalance/{file_hash}", "post"),
    }
    assert {} in spec["paths"]["/upload"]["post"]["security"]  # the paid form needs no key


def test_formats_come_from_occ_protocol(spec: dict[str, Any]) -> None:
    params = {p["name"]: p for p in spec["paths"]["/getLink"]["get"]["parameters"]}
    assert params["quoteId"]["schema"]["pattern"] == "^[0-9a-fA-F]{32}$"
    assert params["nonce"]["schema"]["pattern"] == "^[0-9]{1,13}$"
    path_param = spec["paths"]["/download/{file_hash}"]["parameters"][0]
    assert path_param["schema"]["pattern"] == "^[0-9a-fA-F]{64}$"


def test_successes_carry_no_retry_after(app: Flask) -> None:
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200 and "Retry-After" not in resp.headers
