"""api/metrics.py: requests counted by URL rule and status and timed; /metrics itself is left
out of the counts and never rate-limited; what it serves parses as Prometheus text."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from api import create_app
from tests.fixtures.metrics import TEXT_FORMAT, Samples, parse, requests_by_route, value
from workers.settings import Settings

HASH = "ab" * 32
DOWNLOAD_RULE = "/download/<string:file_hash>"


def samples(app: Flask) -> Samples:
    """Every sample of GET /metrics, read with the Prometheus text parser."""
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith(TEXT_FORMAT)
    return parse(resp.get_data(as_text=True))


def requests_of(table: Samples, route: str, status: str) -> float:
    return requests_by_route(table).get(("GET", route, status), 0.0)


def test_requests_are_counted_by_url_rule_and_status_never_by_raw_path(app: Flask) -> None:
    before = samples(app)
    client = app.test_client()
    assert client.get(f"/download/{HASH}").status_code == 503  # Redis unreachable here
    assert client.get(f"/download/{'cd' * 32}").status_code == 503
    assert client.get("/download/nothex").status_code == 400
    assert client.get("/no/such/path").status_code == 404
    after = samples(app)
    assert requests_of(after, DOWNLOAD_RULE, "503") - requests_of(before, DOWNLOAD_RULE, "503") == 2
    assert requests_of(after, DOWNLOAD_RULE, "400") - requests_of(before, DOWNLOAD_RULE, "400") == 1
    assert requests_of(after, "unmatched", "404") - requests_of(before, "unmatched", "404") == 1
    # no series names a raw path
    assert not [key for key in after if any(HASH in v or "/no/such" in v for _, v in key[1])]
    # each counted request was timed: the histogram's count moved with the counter
    hist = "occ_http_request_duration_seconds_count"
    labels = {"method": "GET", "route": DOWNLOAD_RULE, "status": "503"}
    assert value(after, hist, **labels) - value(before, hist, **labels) == 2
    total = "occ_http_request_duration_seconds_sum"
    assert value(after, total, **labels) > value(before, total, **labels)


def test_metrics_is_not_counted_and_not_rate_limited(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path, redis_url="memory://", rate_limit="2/minute")
    app = create_app({"SETTINGS": settings, "TESTING": True})
    client = app.test_client()
    assert [client.get("/openapi.json").status_code for _ in range(3)] == [200, 200, 429]
    assert {client.get("/metrics").status_code for _ in range(5)} == {200}
    table = samples(app)
    assert not [key for key in table if ("route", "/metrics") in key[1]]
    # the refused request was counted (and timed) as well: the hooks run before the limiter's
    assert requests_of(table, "/openapi.json", "429") >= 1
    labels = {"method": "GET", "route": "/openapi.json", "status": "429"}
    assert value(table, "occ_http_request_duration_seconds_count", **labels) >= 1
