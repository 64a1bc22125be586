"""The shipped nginx.conf (only ports and paths substituted) in front of real gunicorn and the app."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures.metrics import requests_by_route, scrape, value
from tests.fixtures.services import RedisServer, Stack, free_port, start_nginx, stop, wait_for

pytestmark = pytest.mark.integration

LIMIT = 1024 * 1024  # nginx's client_max_body_size in these tests ("1m")


@dataclass
class Proxied:
    base: str
    port: int
    stack: Stack
    upstream: int
    conf_dir: Path

    def access_log(self) -> list[dict[str, str]]:
        """gunicorn's JSON access log: one object per line (other lines are the app's own log)."""
        assert self.stack.logs is not None
        lines = (self.stack.logs / f"gunicorn-{self.upstream}.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if {"path", "status", "request_id"} <= set(e)]


@pytest.fixture
def proxied(stack: Stack, tmp_path: Path) -> Iterator[Proxied]:
    stack.env["MAX_UPLOAD_SIZE"] = str(64 * LIMIT)  # nginx's limit is the one under test
    upstream = free_port()
    stack.start_gunicorn(upstream)
    listen = free_port()
    conf_dir = tmp_path / "nginx"
    conf_dir.mkdir()
    proc = start_nginx(conf_dir, listen, upstream, max_body="1m")
    try:
        yield Proxied(f"http://127.0.0.1:{listen}", listen, stack, upstream, conf_dir)
    finally:
        stop(proc)


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def from_address(
    source: str, port: int, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str]]:
    """GET ``path`` on nginx from the loopback address ``source`` (another client than 127.0.0.1)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_upload_and_download_through_nginx_keep_the_bytes(proxied: Proxied) -> None:
    data = payload(1, 3 * LIMIT // 4)
    multipart = requests.post(f"{proxied.base}/upload", files={"file": ("a.bin", data)}, timeout=60)
    assert multipart.status_code == 200, multipart.text
    raw_data = payload(2, LIMIT)  # exactly the limit: accepted
    raw = requests.put(f"{proxied.base}/upload?name=b.bin", data=raw_data, timeout=60)
    assert raw.status_code == 200, raw.text
    for body, expected in ((multipart.json(), data), (raw.json(), raw_data)):
        assert body["file_hash"] == hashlib.sha256(expected).hexdigest()
        with requests.get(
            f"{proxied.base}/download/{body['file_hash']}", stream=True, timeout=30
        ) as resp:
            assert resp.status_code == 200
            got = b"".join(resp.iter_content(65536))
        assert got == expected
    ranged = requests.get(
        f"{proxied.base}/download/{raw.json()['file_hash']}",
        headers={"Range": "bytes=10-19"},
        timeout=10,
    )
    assert ranged.status_code == 206 and ranged.content == raw_data[10:20]


def test_one_byte_over_the_body_limit_is_refused_by_nginx(proxied: Proxied) -> None:
    before = len(proxied.access_log())
    for body in (payload(3, LIMIT + 1), iter([payload(4, LIMIT // 2), payload(5, LIMIT // 2 + 1)])):
        # once with Content-Length, once chunked (a generator body)
        resp = requests.put(f"{proxied.base}/upload?name=big.bin", data=body, timeout=60)
        assert resp.status_code == 413
        assert resp.json()["code"] == 413  # the gateway's one error shape, from nginx
    time.sleep(0.3)
    # nginx answered: the oversized bodies never reached gunicorn
    assert [e for e in proxied.access_log()[before:] if e["path"] == "/upload"] == []


def test_registration_is_not_reachable_through_nginx(proxied: Proxied) -> None:
    for method, path in (("POST", "/register"), ("GET", "/register"), ("GET", "/staged/x/0")):
        resp = requests.request(method, f"{proxied.base}{path}", json={}, timeout=10)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["code"] == 404
    assert not [e for e in proxied.access_log() if e["path"].startswith(("/register", "/staged"))]


def test_app_sees_the_client_address_through_exactly_one_trusted_hop(
    proxied: Proxied, redis_server: RedisServer
) -> None:
    """nginx replaces any client X-Forwarded-For with the address it saw; the app (ProxyFix
    x_for=1) takes that one hop, so a forged header never chooses the rate-limit key."""
    status, _ = from_address("127.0.0.2", proxied.port, "/files", {"X-Forwarded-For": "6.6.6.6"})
    assert status == 200
    entry = wait_for(
        lambda: [e for e in proxied.access_log() if e["path"] == "/files"], 10, "access log"
    )[-1]
    assert entry["forwarded_for"] == "127.0.0.2"  # the client, one hop, the forged value gone
    # REMOTE_ADDR as the app left it: ProxyFix rewrote nginx's 127.0.0.1 to the client
    assert entry["remote"] == "127.0.0.2"
    assert entry["forwarded_proto"] == "http"
    # the app's own view: flask-limiter keys its counters by request.remote_addr
    keys = [k.decode() for k in redis_server.client().keys("*occ:ratelimit*")]
    assert any("ip:127.0.0.2" in k for k in keys), keys
    assert not any("6.6.6.6" in k for k in keys), keys


def test_request_ids_are_set_and_passed_to_the_app(proxied: Proxied) -> None:
    kept = requests.get(f"{proxied.base}/health", headers={"X-Request-Id": "abc-123"}, timeout=10)
    assert kept.headers["X-Request-Id"] == "abc-123"
    made = requests.get(
        f"{proxied.base}/health", headers={"X-Request-Id": 'bad"id <script>'}, timeout=10
    )
    generated = made.headers["X-Request-Id"]
    assert len(generated) == 32 and int(generated, 16) >= 0  # nginx's $request_id
    logged = wait_for(
        lambda: (
            {e["request_id"] for e in proxied.access_log() if e["path"] == "/health"}
            >= {"abc-123", generated}
        ),
        10,
        "request ids in the access log",
    )
    assert logged


def test_downloads_stream_instead_of_spooling_to_nginx_temp_files(proxied: Proxied) -> None:
    """proxy_buffering off on /download/: gunicorn sends only as fast as the client reads, so a
    paused reader keeps the download open upstream (a buffering nginx would take it all at once
    into proxy_temp_path and gunicorn would log it finished)."""
    data = payload(6, 16 * LIMIT)  # far more than the socket buffers on the way
    direct = f"http://127.0.0.1:{proxied.upstream}"  # larger than nginx's test limit: upload direct
    file_hash = requests.put(f"{direct}/upload?name=s.bin", data=data, timeout=120).json()[
        "file_hash"
    ]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxied.port))
    try:
        sock.sendall(f"GET /download/{file_hash} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = sock.recv(1024)
        assert received.startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # the reader pauses
        downloads = [e for e in proxied.access_log() if e["path"].startswith("/download/")]
        assert downloads == []  # still streaming: gunicorn has not finished the response
        assert not [p for p in (proxied.conf_dir / "proxy").rglob("*") if p.is_file()]
        sock.settimeout(30)
        while len(received.partition(b"\r\n\r\n")[2]) < len(data):
            more = sock.recv(1 << 20)
            if not more:
                break
            received += more
        assert received.partition(b"\r\n\r\n")[2] == data
    finally:
        sock.close()


def test_metrics_count_the_requests_made_through_nginx(proxied: Proxied) -> None:
    """/metrics answers the loopback through nginx and counts exactly the requests that reached
    the app; those nginx refused itself (413, /register) are not among them. Any other client
    gets nginx's 403 and never reaches gunicorn."""
    before = requests_by_route(scrape(proxied.base))
    data = payload(7, LIMIT // 2)
    up = requests.put(f"{proxied.base}/upload?name=m.bin", data=data, timeout=60)
    assert up.status_code == 200, up.text
    down = requests.get(f"{proxied.base}/download/{up.json()['file_hash']}", timeout=30)
    assert down.status_code == 200 and down.content == data
    assert requests.get(f"{proxied.base}/download/{'0' * 64}", timeout=10).status_code == 404
    assert requests.get(f"{proxied.base}/no/such/path", timeout=10).status_code == 404
    assert requests.get(f"{proxied.base}/files", timeout=10).status_code == 200
    big = requests.put(f"{proxied.base}/upload?name=x", data=payload(8, LIMIT + 1), timeout=60)
    assert big.status_code == 413  # nginx's
    assert requests.post(f"{proxied.base}/register", json={}, timeout=10).status_code == 404
    table = scrape(proxied.base)
    after = requests_by_route(table)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert delta == {
        ("PUT", "/upload", "200"): 1,
        ("GET", "/download/<string:file_hash>", "200"): 1,
        ("GET", "/download/<string:file_hash>", "404"): 1,
        ("GET", "unmatched", "404"): 1,
        ("GET", "/files", "200"): 1,
    }
    assert value(table, "occ_upload_bytes_total") == len(data)  # a fresh stack: its bytes only
    assert value(table, "occ_download_bytes_total") == len(data)

    scrapes = [e for e in proxied.access_log() if e["path"] == "/metrics"]
    status, headers = from_address("127.0.0.2", proxied.port, "/metrics", {})
    assert status == 403 and headers["content-type"] == "application/json"
    time.sleep(0.3)
    assert [e for e in proxied.access_log() if e["path"] == "/metrics"] == scrapes
