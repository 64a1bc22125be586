"""Microservice registration on the private API with a real Redis (protocol.md §6, reliability.md row 17).

Registrations are signed and expire without a heartbeat; unsigned, foreign, stale and replayed
ones are refused; /register does not exist on the public app; staged files need a valid token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from werkzeug.serving import make_server

from api.private import create_private_app
from occ_protocol.signatures import sign_record
from tests.fakes.microservice import (
    DEFAULT_TOKEN,
    MICROSERVICE_ADDRESS,
    MICROSERVICE_KEY,
    FakeMicroservice,
)
from tests.fixtures.services import ROOT, VENV_BIN, RedisServer, free_port, stop, wait_for
from workers.remote.client import RemoteStorageClient
from workers.remote.staged import staged_file_url
from workers.runtime import get_runtime
from workers.settings import Settings
from workers.state.registry import (
    InvalidRecordError,
    Registry,
    RegistryReplayError,
    normalize_payment,
)

pytestmark = pytest.mark.integration

OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
QUOTE_ID = "40acc6937e1bd98631f47e7cbda72920"
DB = 3  # apart from the other integration tests' database 0


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    redis.Redis(port=redis_server.port, db=DB).flushdb()
    return Settings(
        redis_url=f"redis://127.0.0.1:{redis_server.port}/{DB}",
        storage_dir=tmp_path / "storage",
        registry_allowlist=(MICROSERVICE_ADDRESS.lower(),),
        allow_loopback_services=True,
    )


ServeFn = Callable[[Settings], str]


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """Serve create_private_app(settings) for real on 127.0.0.1:<free port>; return its base URL."""
    servers: list[Any] = []

    def _serve(s: Settings) -> str:
        server = make_server("127.0.0.1", free_port(), create_private_app(s), threaded=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield _serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def private(settings: Settings, serve: ServeFn) -> str:
    return serve(settings)


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakeMicroservice]]:
    started: list[FakeMicroservice] = []

    def _make(**kw: Any) -> FakeMicroservice:
        ms = FakeMicroservice(**kw).start()
        started.append(ms)
        return ms

    yield _make
    for ms in started:
        ms.stop()


def registry(s: Settings) -> Registry:
    return Registry(redis.Redis.from_url(s.redis_url), s.registry_ttl)


def post(base: str, body: Any) -> requests.Response:
    return requests.post(f"{base}/register", json=body, timeout=10)


def assert_error_shape(resp: requests.Response, code: int) -> dict[str, Any]:
    assert resp.status_code == code, resp.text
    body: dict[str, Any] = resp.json()
    assert (
        body["code"] == code
        and isinstance(body["status"], str)
        and isinstance(body["message"], str)
    )
    return body


# --- registration ------------------------------------------------------------------------------


def test_registration_created_then_refreshed(settings: Settings, private: str, fakes: Any) -> None:
    ms = fakes(register_url=f"{private}/register", heartbeat_s=3600)
    assert ms.register_statuses == [201]
    assert ms.register() == 200
    assert ms.registrations == 2
    [record] = registry(settings).list()
    assert record["type"] == "arweave"
    assert record["url"] == ms.url
    assert record["signer"] == MICROSERVICE_ADDRESS
    assert record["payment"] == [
        {"chainId": 8996, "acceptedTokens": [{"title": "OCEAN", "value": DEFAULT_TOKEN}]}
    ]
    assert isinstance(record["registered_at"], int)
    key = Registry.key("arweave")
    assert 590 <= redis.Redis.from_url(settings.redis_url).ttl(key) <= 600


def test_payment_methods_alias_and_token_object_are_normalised(
    settings: Settings, private: str
) -> None:
    body = {
        "type": "filecoin",
        "description": "Filecoin",
        "url": "http://127.0.0.1:9",
        "paymentMethods": [{"chainId": "8996", "acceptedTokens": {"OCEAN": DEFAULT_TOKEN}}],
    }
    resp = post(private, sign_record(MICROSERVICE_KEY, body))
    assert resp.status_code == 201, resp.text
    stored = registry(settings).get("filecoin")
    assert stored is not None
    assert stored["payment"] == [
        {"chainId": 8996, "acceptedTokens": [{"title": "OCEAN", "value": DEFAULT_TOKEN}]}
    ]


def test_unsigned_registration_rejected(private: str, fakes: Any) -> None:
    body = fakes().record()
    body["timestamp"] = int(time.time())
    assert_error_shape(post(private, body), 401)


def test_bad_signature_rejected(private: str, fakes: Any) -> None:
    body = fakes().signed_record()
    body["signature"] = "0x1234"
    assert_error_shape(post(private, body), 401)


def test_wrong_signer_rejected(private: str, fakes: Any) -> None:
    ms = fakes(key=OTHER_KEY)
    assert "allow-list" in assert_error_shape(post(private, ms.signed_record()), 403)["message"]


def test_tampered_registration_rejected(private: str, fakes: Any) -> None:
    body = fakes().signed_record()
    body["url"] = "http://10.1.2.3:8080"  # redirect the gateway's calls elsewhere
    resp = post(private, body)
    assert resp.status_code in (401, 403)  # recovers some other address


def test_stale_or_future_timestamp_rejected(private: str, fakes: Any) -> None:
    ms = fakes()
    # 30 s past the 300 s window on either side: a slow request still lands outside it
    for ts in (int(time.time()) - 330, int(time.time()) + 330):
        body = assert_error_shape(post(private, ms.signed_record(timestamp=ts)), 401)
        assert "timestamp" in body["message"]


def test_replayed_registration_rejected(settings: Settings, private: str, fakes: Any) -> None:
    body = fakes().signed_record()
    assert post(private, body).status_code == 201
    assert_error_shape(post(private, body), 409)
    # the same signature in another spelling (upper-case hex, v as 0/1) is still a replay
    sig = body["signature"]
    v = int(sig[-2:], 16) - 27
    assert_error_shape(
        post(private, dict(body, signature=sig[:-2].upper().replace("0X", "0x") + f"{v:02x}")), 409
    )
    with pytest.raises(RegistryReplayError):
        registry(settings).register(dict(body, signer=MICROSERVICE_ADDRESS))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "occ"}, "type"),
        ({"type": "Bad Type"}, "type"),
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "http://169.254.169.254/"}, "url"),
        ({"timestamp": "1700000000"}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"payment": []}, "payment"),
        ({"payment": [{"chainId": "x", "acceptedTokens": []}]}, "payment"),
        ({"payment": [{"chainId": 1, "acceptedTokens": {"OCEAN": "0xnope"}}]}, "payment"),
        ({"payment": None}, "payment"),
        (
            {"paymentMethods": [{"chainId": 1, "acceptedTokens": {"OCEAN": DEFAULT_TOKEN}}]},
            "payment",
        ),
    ],
)
def test_malformed_registration_names_the_field(
    private: str, fakes: Any, change: dict[str, Any], field: str
) -> None:
    ms = fakes()
    body = {**ms.record(), "timestamp": int(time.time()), **change}
    if body.get("payment") is None:
        body.pop("payment")
    signed = sign_record(MICROSERVICE_KEY, body)
    error = assert_error_shape(post(private, signed), 400)
    assert field in error["message"]


def test_non_json_body_rejected(private: str) -> None:
    resp = requests.post(f"{private}/register", data=b"not json", timeout=10)
    assert_error_shape(resp, 400)


def test_storage_disappears_after_ttl_without_heartbeat(
    settings: Settings, serve: ServeFn, fakes: Any
) -> None:
    short = dataclasses.replace(settings, registry_ttl=2)
    base = serve(short)
    ms = fakes(register_url=f"{base}/register", heartbeat_s=0.6)
    reg = registry(short)
    from api import create_app

    public = create_app({"SETTINGS": short, "TESTING": True}).test_client()

    def listed() -> list[str]:
        return [entry["type"] for entry in public.get("/").get_json()]

    time.sleep(3.0)  # longer than the TTL: only the heartbeat keeps it listed
    assert [r["type"] for r in reg.list()] == ["arweave"]
    assert listed() == ["occ", "arweave"]
    assert ms.registrations >= 4
    assert all(code in (200, 201) for code in ms.register_statuses)
    ms.stop_heartbeat()
    stopped = time.monotonic()
    wait_for(lambda: reg.list() == [], 6, "registration to expire")
    assert time.monotonic() - stopped <= 3.5
    assert reg.get("arweave") is None
    assert listed() == ["occ"]  # GET / no longer offers it, so nothing is routed to it


def test_register_not_reachable_on_public_app(settings: Settings, fakes: Any) -> None:
    from api import create_app

    app = create_app({"SETTINGS": settings, "TESTING": True})
    client = app.test_client()
    body = fakes().signed_record()
    resp = client.post("/register", json=body)
    assert resp.status_code in (404, 405)
    assert client.get(f"/staged/{QUOTE_ID}/0?token={'0' * 64}").status_code in (404, 405)
    assert registry(settings).list() == []


# --- staged files -----------------------------------------------------------------------------


def sketch_key() -> bytes:
    """The secret the served private app signs staged URLs with (its process runtime's)."""
    return get_runtime().sketch_key


def stage(settings: Settings, data: bytes, index: int = 0) -> Path:
    path = settings.staging_dir / "quotes" / QUOTE_ID / f"{index}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_staged_file_needs_a_valid_token(settings: Settings, private: str) -> None:
    data = os.urandom(70_000)
    stage(settings, data)
    good = staged_file_url(private, QUOTE_ID, 0, sketch_key())
    resp = requests.get(good, timeout=10)
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    for url in (
        f"{private}/staged/{QUOTE_ID}/0?token={'0' * 64}",
        f"{private}/staged/{QUOTE_ID}/0",
        staged_file_url(private, QUOTE_ID, 1, sketch_key()).replace(
            "/1?", "/0?"
        ),  # token of another index
        staged_file_url(private, "f" * 32, 0, sketch_key()).replace(
            "f" * 32, QUOTE_ID
        ),  # of another quote
        staged_file_url(private, QUOTE_ID, 0, sketch_key(), ttl_s=-1),  # expired
        good.replace("?expires=", "?expires=9"),  # expiry pushed out: the token no longer fits
        re.sub(r"expires=[0-9]+&", "", good),  # no expiry
        good.replace("?expires=", "?expires=-"),
    ):
        assert_error_shape(requests.get(url, timeout=10), 403)
    assert_error_shape(
        requests.get(staged_file_url(private, QUOTE_ID, 5, sketch_key()), timeout=10), 404
    )
    assert requests.get(f"{private}/staged/..%2F..%2Fetc/0?token=x", timeout=10).status_code == 404


def test_fake_microservice_fetches_staged_files(
    settings: Settings, private: str, fakes: Any
) -> None:
    ms = fakes(upload_delay_s=0.1)
    data = [os.urandom(5000), b"second file"]
    files = []
    for i, blob in enumerate(data):
        stage(settings, blob, i)
        files.append(
            {
                "url": staged_file_url(private, QUOTE_ID, i, sketch_key()),
                "length": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "content_type": "application/octet-stream",
            }
        )
    client = RemoteStorageClient.for_settings(ms.url, settings)
    client.upload(QUOTE_ID, "1700000000", "0x" + "11" * 65, files)
    wait_for(lambda: client.get_status(QUOTE_ID) == 400, 10, "remote upload done")
    assert ms.fetched[QUOTE_ID] == data
    links = client.get_link(QUOTE_ID)
    assert len(links) == 2
    assert all(
        link["type"] == "arweave" and link["transactionId"] == link["transactionHash"]
        for link in links
    )

    failing = fakes(fail_uploads=True, upload_delay_s=0.0)
    failing_client = RemoteStorageClient.for_settings(failing.url, settings)
    failing_client.upload(QUOTE_ID, "1700000001", "0x" + "11" * 65, files)
    wait_for(lambda: failing_client.get_status(QUOTE_ID) == 404, 10, "remote upload failed")


# --- registry library ---------------------------------------------------------------------------


def test_registry_lists_only_live_records(settings: Settings) -> None:
    reg = Registry(redis.Redis.from_url(settings.redis_url), 600)
    base = {
        "description": "",
        "url": "http://10.0.0.1",
        "payment": [{"chainId": 1, "acceptedTokens": {}}],
    }
    with pytest.raises(InvalidRecordError, match="acceptedTokens"):
        reg.register({**base, "type": "a", "signature": "0x" + "11" * 65})
    good = {**base, "payment": [{"chainId": 1, "acceptedTokens": {"T": DEFAULT_TOKEN}}]}
    for t in ("b", "a"):
        assert reg.register(sign_record(MICROSERVICE_KEY, {**good, "type": t}))
    assert [r["type"] for r in reg.list()] == ["a", "b"]
    redis.Redis.from_url(settings.redis_url).delete(Registry.key("a"))  # as if its TTL ran out
    assert [r["type"] for r in reg.list()] == ["b"]
    assert reg.get("a") is None and reg.get("../x") is None


def test_normalize_payment() -> None:
    assert normalize_payment(
        [{"chainId": "137", "acceptedTokens": [{"title": "T", "value": DEFAULT_TOKEN}]}]
    ) == [{"chainId": 137, "acceptedTokens": [{"title": "T", "value": DEFAULT_TOKEN}]}]
    bad: Any
    for bad in ({}, [{"chainId": True, "acceptedTokens": {"T": DEFAULT_TOKEN}}], [{"chainId": 1}]):
        with pytest.raises(InvalidRecordError):
            normalize_payment(bad)


# --- the gunicorn target ------------------------------------------------------------------------


def test_gunicorn_target_serves_registration(
    settings: Settings, fakes: Any, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "PYTEST"))}
    env.update(
        REDIS_URL=settings.redis_url,
        STORAGE_DIR=str(settings.storage_dir),
        REGISTRY_ALLOWLIST=MICROSERVICE_ADDRESS,
        ALLOW_LOOPBACK_SERVICES="true",
        PYTHONPATH=str(ROOT),
    )
    log = open(tmp_path / "gunicorn-private.log", "wb")  # noqa: SIM115 - kept open for the process
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "2",
            "api.private:create_private_app()",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{base}/health", timeout=2).ok, 30, "private gunicorn")
        ms = fakes(register_url=f"{base}/register", heartbeat_s=3600)
        assert ms.register_statuses == [201]
    finally:
        stop(proc)
        log.close()
