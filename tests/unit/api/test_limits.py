"""api/limits.py: who a request is counted as, 429 in the one shape with Retry-After (only there)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from api.errors import register_error_handlers
from api.limits import accepted_quote_upload, client_key, init_limiter
from workers.settings import Settings

ADDRESS = "0x" + "Ab" * 20


def test_signed_history_is_counted_per_wallet(app: Flask) -> None:
    path = f"/getHistory?userAddress={ADDRESS}&nonce=1&signature=0x12"
    with app.test_request_context(path):
        assert client_key() == f"wallet:{ADDRESS.lower()}"


def test_unsigned_or_malformed_calls_are_counted_per_ip(app: Flask) -> None:
    env = {"REMOTE_ADDR": "192.0.2.1"}
    for path in (
        f"/getHistory?userAddress={ADDRESS}&nonce=1",  # no signature
        f"/getHistory?userAddress={ADDRESS}x&nonce=1&signature=0x12",  # not an address
        "/files",
    ):
        with app.test_request_context(path, environ_base=env):
            assert client_key() == "ip:192.0.2.1", path


def test_signed_quote_whose_owner_cannot_be_read_falls_back_to_ip(app: Flask) -> None:
    # Redis unreachable in these tests: the owner is unknown, the IP counts
    with app.test_request_context(
        f"/getLink?quoteId={'a' * 32}&nonce=1&signature=0x1", environ_base={"REMOTE_ADDR": "::1"}
    ):
        assert client_key() == "ip:::1"


def test_only_posted_uploads_of_a_waiting_quote_are_exempt(app: Flask) -> None:
    for method, path in (
        ("GET", f"/upload?quoteId={'a' * 32}"),
        ("POST", "/upload"),
        ("POST", "/upload?quoteId=xyz"),
        ("POST", f"/getLink?quoteId={'a' * 32}"),
        ("POST", f"/upload?quoteId={'a' * 32}"),  # its status cannot be read (Redis down)
    ):
        with app.test_request_context(path, method=method):
            assert accepted_quote_upload() is False, (method, path)


def test_429_has_retry_after_and_successes_do_not(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path, redis_url="memory://", rate_limit="2/minute")
    app = Flask(__name__)
    register_error_handlers(app)
    init_limiter(app, settings)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    client = app.test_client()
    answers = [client.get("/ping") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert all("Retry-After" not in a.headers for a in answers[:2])
    assert not any(h.startswith("X-RateLimit") for a in answers for h, _ in a.headers.items())
    limited = answers[2]
    body = limited.get_json()
    assert body["code"] == 429 and body["status"] == "Too Many Requests"
    assert "retry after" in body["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
