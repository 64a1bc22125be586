"""workers/remote.py: the guarded microservice client (protocol.md §6) and staged-file tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.fakes.microservice import DEFAULT_TOKEN, FakeMicroservice
from workers.remote import guard, staged
from workers.remote.client import RemoteStorageClient
from workers.remote.guard import RemoteAddressError, RemoteError

QUOTE_ID = "40acc6937e1bd98631f47e7cbda72920"
QUOTE_BODY = {
    "type": "arweave",
    "files": [{"length": 1500}, {"length": 1}],
    "duration": 3600,
    "payment": {"chainId": 8996, "tokenAddress": DEFAULT_TOKEN},
    "userAddress": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
}


class _Canned(BaseHTTPRequestHandler):
    """Answers by the first path segment: /<mode>/<endpoint>."""

    hits: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.hits.append(self.path)
        mode = self.path.split("/")[1]
        if mode == "redirect":
            self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif mode == "big":
            self._send(200, b'{"status": 400, "pad": "' + b"x" * 2_000_000 + b'"}')
        elif mode == "bigchunked":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(b'{"status": 400, "pad": "')
                for _ in range(40):
                    self.wfile.write(b"x" * 65536)
                self.wfile.write(b'"}')
            except ConnectionError:
                pass  # the client hung up at its cap, as it should
        elif mode == "malformed":
            self._send(200, b"<html>secret upstream text</html>")
        elif mode == "wrongshape":
            self._send(200, b'{"status": "done"}')
        elif mode == "error":
            self._send(500, b"Traceback: secret upstream text")
        elif mode == "links":
            self._send(
                200, json.dumps([{"type": "arweave", "transactionHash": "ab" * 32}]).encode()
            )
        else:
            self._send(200, b'{"status": 302}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.do_GET()


@pytest.fixture(scope="module")
def canned() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeMicroservice]:
    ms = FakeMicroservice(upload_delay_s=0.0).start()
    yield ms
    ms.stop()


def client(base: str, **kw: Any) -> RemoteStorageClient:
    kw.setdefault("allow_loopback", True)
    kw.setdefault("timeout", 5.0)
    return RemoteStorageClient(base, **kw)


# --- transport guards --------------------------------------------------------------------------


def test_redirect_is_not_followed(canned: str) -> None:
    _Canned.hits.clear()
    with pytest.raises(RemoteError, match="redirect") as info:
        client(f"{canned}/redirect").get_status(QUOTE_ID)
    assert info.value.status_code == 302
    assert len(_Canned.hits) == 1


@pytest.mark.parametrize("mode", ["big", "bigchunked"])
def test_response_bigger_than_cap_is_rejected(canned: str, mode: str) -> None:
    with pytest.raises(RemoteError, match="too large"):
        client(f"{canned}/{mode}", max_bytes=1_048_576).get_status(QUOTE_ID)


def test_response_under_cap_is_read(canned: str) -> None:
    assert client(f"{canned}/ok", max_bytes=1024).get_status(QUOTE_ID) == 302


@pytest.mark.parametrize("mode", ["malformed", "wrongshape", "error"])
def test_malformed_or_failed_answers_raise_without_upstream_text(canned: str, mode: str) -> None:
    with pytest.raises(RemoteError) as info:
        client(f"{canned}/{mode}").get_status(QUOTE_ID)
    assert "secret" not in str(info.value)
    assert "upstream" not in str(info.value)


def test_loopback_refused_unless_allowed(canned: str) -> None:
    with pytest.raises(RemoteAddressError, match="loopback"):
        RemoteStorageClient(f"{canned}/ok")  # IP literal: refused at construction
    port = canned.rsplit(":", 1)[1]
    _Canned.hits.clear()
    named = RemoteStorageClient(f"http://localhost:{port}/ok")  # a name: refused at connection
    with pytest.raises(RemoteAddressError, match="loopback"):
        named.get_status(QUOTE_ID)
    assert _Canned.hits == []  # nothing was sent
    assert client(f"http://localhost:{port}/ok").get_status(QUOTE_ID) == 302


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",  # metadata
        "http://169.254.10.1",  # link-local
        "http://[fe80::1]:8080",  # IPv6 link-local
        "http://[::ffff:169.254.169.254]",  # IPv4-mapped metadata
        "http://[fd00:ec2::254]",  # AWS IPv6 metadata
        "http://0.0.0.0:8080",  # unspecified
        "http://[::]:8080",
    ],
)
@pytest.mark.parametrize("allow_loopback", [False, True])
def test_link_local_metadata_unspecified_always_refused(url: str, allow_loopback: bool) -> None:
    with pytest.raises(RemoteAddressError):
        RemoteStorageClient(url, allow_loopback=allow_loopback)


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name resolving to one public and one metadata address is refused before any connection."""

    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    def no_connect(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("must not connect")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(RemoteAddressError, match="metadata"):
        RemoteStorageClient("http://storage.example.com", allow_loopback=True).get_status(QUOTE_ID)


def test_unresolvable_host_is_a_remote_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror("nope")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(RemoteAddressError, match="resolve"):
        RemoteStorageClient("http://storage.invalid").get_status(QUOTE_ID)


def test_unreachable_is_a_remote_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteError, match="unreachable"):
        client(f"http://127.0.0.1:{port}").get_status(QUOTE_ID)


@pytest.mark.parametrize(
    "url", ["ftp://example.com", "file:///etc/passwd", "http://user:pw@example.com", "http://", "x"]
)
def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(RemoteAddressError):
        RemoteStorageClient(url, allow_loopback=True)


def test_private_network_addresses_are_allowed() -> None:
    assert guard.refused_reason("10.0.0.5") is None
    assert guard.refused_reason("192.168.1.2") is None
    assert guard.refused_reason("127.0.0.1") == "a loopback address"
    assert guard.refused_reason("::1", allow_loopback=True) is None


# --- the wire protocol against the fake microservice ----------------------------------------


def test_quote_status_upload_link_against_fake(fake: FakeMicroservice, tmp_path: Any) -> None:
    c = client(fake.url)
    quote = c.get_quote(QUOTE_BODY)
    assert quote == {
        "tokenAmount": "2",  # ceil(1501 / 1000)
        "chainId": 8996,
        "tokenAddress": DEFAULT_TOKEN,
        "approveAddress": "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    }
    assert c.get_status("0" * 32) == 0
    with pytest.raises(RemoteError) as info:
        c.get_link("0" * 32)
    assert info.value.status_code == 404
    # upload with unreachable file URLs: the fake reports a staged-file failure
    bad = [{"url": "http://127.0.0.1:9/none", "length": 1, "sha256": "0" * 64, "content_type": "x"}]
    c.upload("1" * 32, "1700000000", "0x" + "11" * 65, bad)
    from tests.fixtures.services import wait_for

    wait_for(lambda: c.get_status("1" * 32) == 403, 10, "fake failure status")
    assert fake.uploads[-1]["files"][0]["sha256"] == "0" * 64


def test_get_quote_for_another_token_is_rejected(canned: str) -> None:
    body = dict(QUOTE_BODY, payment={"chainId": 1, "tokenAddress": DEFAULT_TOKEN})
    with pytest.raises(RemoteError):
        client(f"{canned}/ok").get_quote(body)  # answer is {"status": 302}: malformed quote


def test_arweave_links_get_transaction_id(canned: str) -> None:
    links = client(f"{canned}/links").get_link(QUOTE_ID)
    assert links == [{"type": "arweave", "transactionHash": "ab" * 32, "transactionId": "ab" * 32}]


def test_bad_quote_id_refused_before_any_call(canned: str) -> None:
    with pytest.raises(ValueError):
        client(canned).get_status("../../etc")


# --- staged-file tokens -------------------------------------------------------------------------


def test_staged_tokens_bind_quote_index_and_expiry() -> None:
    key, exp, now = b"k" * 32, 2_000_000_000, 1_900_000_000.0
    token = staged.staged_token(QUOTE_ID, 0, exp, key)
    assert len(token) == 64 and int(token, 16) >= 0
    assert staged.check_staged_token(QUOTE_ID, 0, exp, token, key, now=now)
    assert staged.check_staged_token(QUOTE_ID, 0, exp, token.upper(), key, now=now)
    assert staged.check_staged_token(QUOTE_ID, 0, exp, token, key, now=exp)  # the last second
    assert not staged.check_staged_token(QUOTE_ID, 0, exp, token, key, now=exp + 1)  # expired
    assert not staged.check_staged_token(QUOTE_ID, 0, exp + 1, token, key, now=now)
    assert not staged.check_staged_token(QUOTE_ID, 1, exp, token, key, now=now)
    assert not staged.check_staged_token("f" * 32, 0, exp, token, key, now=now)
    assert not staged.check_staged_token(QUOTE_ID, 0, exp, token, b"j" * 32, now=now)
    # derived key: not a plain HMAC under the runtime secret
    assert token != hmac.new(key, f"{QUOTE_ID}:0:{exp}".encode(), hashlib.sha256).hexdigest()
    url = staged.staged_file_url("http://gw:5001/", QUOTE_ID, 2, key, ttl_s=100, now=now)
    token2 = staged.staged_token(QUOTE_ID, 2, int(now) + 100, key)
    assert url == f"http://gw:5001/staged/{QUOTE_ID}/2?expires={int(now) + 100}&token={token2}"
