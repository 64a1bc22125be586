"""occ-client without a real gateway: the streaming multipart body, arguments, errors, signing."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import requests
from werkzeug.formparser import parse_form_data

from client import cache, checks, cli, commands, config, erc20, gateway, keys, nonces
from client.errors import ClientError, GatewayError
from client.streams import FilePart, MultipartStream
from occ_protocol.signatures import sign_text, signed_text
from occ_protocol.status import Status, is_final, status_name

ROOT = Path(__file__).resolve().parents[3]
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDR0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
VECTOR_QUOTE = "40acc6937e1bd98631f47e7cbda72920"
VECTOR_NONCE = "1700000000"
VECTOR_SIG = (
    "0x41348bc0781c4d800e09406b449e5f1bcfa4fbe2cba2de731e624bac08a03b19"
    "5a1bc9b803a1b475301a2ca39a4484fcf62ce7e6849fcffc138f12475ef4a4a01b"
)
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real key, dev chain or cache from the developer's machine leaks into a test."""
    for var in (config.ENV_KEY, config.ENV_RPC, config.ENV_GATEWAY):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(config.ENV_DEVCHAIN, "")
    monkeypatch.setenv("OCC_CLIENT_CACHE", str(tmp_path / "cache"))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def parse_multipart(stream: MultipartStream) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    body = stream.read()
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": stream.content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    _, form, files = parse_form_data(environ)
    return dict(form.items()), {k: (f.filename or "", f.read()) for k, f in files.items()}


# --- the streaming multipart body ------------------------------------------------------------------


class SpyFile(io.BytesIO):
    def __init__(self, data: bytes, sizes: list[int]) -> None:
        super().__init__(data)
        self.sizes = sizes

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


def test_multipart_length_is_exact_and_parses_back(tmp_path: Path) -> None:
    a = write(tmp_path / "a.bin", bytes(range(256)) * 1000 + b"\r\n--tail")
    b = write(tmp_path / 'we"ird name.txt', b"hello\r\n")
    empty = write(tmp_path / "empty", b"")
    stream = MultipartStream(
        fields=[("replication_factor", "3")],
        files=[FilePart("file1", a), FilePart("file2", b), FilePart("file3", empty)],
        block_size=4096,
    )
    length = len(stream)
    form, files = parse_multipart(stream)
    assert stream.sent == length
    assert form == {"replication_factor": "3"}
    assert files["file1"] == ("a.bin", a.read_bytes())
    assert files["file2"][1] == b"hello\r\n"
    assert files["file2"][0] in ('we"ird name.txt', "we%22ird name.txt")
    assert files["file3"] == ("empty", b"")
    assert list(files) == ["file1", "file2", "file3"]  # quote order


@pytest.mark.parametrize("read_size", [1, 7, 4096, 10_000, 1 << 20])
def test_multipart_same_bytes_for_any_read_size(tmp_path: Path, read_size: int) -> None:
    f = write(tmp_path / "f", b"x" * 20_000)
    whole = MultipartStream(files=[FilePart("file", f)], boundary="b0und", block_size=4096).read()
    stream = MultipartStream(files=[FilePart("file", f)], boundary="b0und", block_size=4096)
    pieces = []
    while piece := stream.read(read_size):
        assert len(piece) <= read_size
        pieces.append(piece)
    assert b"".join(pieces) == whole
    assert len(whole) == len(stream)


def test_multipart_never_reads_a_whole_file_at_once(tmp_path: Path) -> None:
    size = 1_000_000
    f = write(tmp_path / "big", b"\xab" * size)
    sizes: list[int] = []
    opened: list[Path] = []

    def opener(path: Path) -> BinaryIO:
        opened.append(path)
        return SpyFile(path.read_bytes(), sizes)

    progress: list[int] = []
    stream = MultipartStream(
        files=[FilePart("file1", f), FilePart("file2", f)],
        block_size=65536,
        opener=opener,
        progress=progress.append,
    )
    for block in stream:  # the way the HTTP layer consumes it
        assert len(block) <= 65536
    assert opened == [f, f]
    assert sizes and max(sizes) <= 65536 and -1 not in sizes
    assert sum(progress) == 2 * size
    # even read() with no size never asks the file for more than a block
    sizes.clear()
    again = MultipartStream(files=[FilePart("file1", f)], block_size=8192, opener=opener)
    assert len(again.read()) == len(again)
    assert max(sizes) <= 8192


def test_multipart_detects_a_file_that_changed_size(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"a" * 100)
    grown = MultipartStream(files=[FilePart("file", f)])
    f.write_bytes(b"a" * 200)
    with pytest.raises(ClientError, match="grew"):
        grown.read()
    shrunk = MultipartStream(files=[FilePart("file", f)])
    f.write_bytes(b"a" * 10)
    with pytest.raises(ClientError, match="shorter"):
        shrunk.read()


def test_requests_sends_it_with_content_length_not_chunked(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"z" * 5000)
    stream = MultipartStream(files=[FilePart("file1", f)])
    prepared = requests.Request("POST", "http://127.0.0.1:1/upload", data=stream).prepare()
    assert prepared.headers["Content-Length"] == str(len(stream))
    assert "Transfer-Encoding" not in prepared.headers
    assert prepared.body is stream  # type: ignore[comparison-overlap]  # streamed, not materialised
    assert stream.sent == 0


# --- a fake gateway for the HTTP paths -------------------------------------------------------------

CONTENT = b"downloaded bytes " * 1000
CONTENT_HASH = hashlib.sha256(CONTENT).hexdigest()


class FakeGateway(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012 - shared with the test through the class

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/download/"):
            wanted = self.path.rsplit("/", 1)[-1]
            body = CONTENT if wanted == CONTENT_HASH else b"not what you asked for"
            self.reply(200, body, "application/octet-stream")
        elif self.path.startswith("/getStatus"):
            self.reply(200, b'{"status": 400}')
        elif self.path.startswith("/verify/"):
            error = {
                "code": 404,
                "status": "Not Found",
                "message": "No such file",
                "errors": {"file_hash": ["Unknown."]},
            }
            self.reply(404, json.dumps(error).encode())
        else:
            self.reply(502, b"<html>Traceback (most recent call last): secret</html>", "text/html")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        FakeGateway.received.append(
            {"path": self.path, "headers": dict(self.headers), "body": body, "length": length}
        )
        self.reply(200, json.dumps({"success": True, "file_hash": "h"}).encode())

    do_PUT = do_POST


@pytest.fixture
def fake_gateway() -> Iterator[str]:
    FakeGateway.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_upload_streams_multipart_with_content_length(
    fake_gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path / "report.pdf", b"%PDF" + bytes(200_000))
    code, out, _ = run(
        capsys, "upload", str(f), "--replication-factor", "2", "--gateway", fake_gateway
    )
    assert code == 0 and json.loads(out)["success"] is True
    (req,) = FakeGateway.received
    assert "chunked" not in req["headers"].get("Transfer-Encoding", "")
    assert req["length"] == len(req["body"])
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": req["headers"]["Content-Type"],
        "CONTENT_LENGTH": str(req["length"]),
        "wsgi.input": io.BytesIO(req["body"]),
    }
    _, form, files = parse_form_data(environ)
    assert form["replication_factor"] == "2"
    assert files["file"].filename == "report.pdf" and files["file"].read() == f.read_bytes()


def test_raw_upload_is_the_file_as_body(
    fake_gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path / "raw.bin", bytes(range(256)) * 300)
    code, _, _ = run(capsys, "--gateway", fake_gateway, "upload", "--raw", str(f))
    assert code == 0
    (req,) = FakeGateway.received
    assert req["path"].startswith("/upload?name=raw.bin")
    assert req["body"] == f.read_bytes()


def test_download_verifies_sha256(
    fake_gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "got.bin"
    code, out, _ = run(
        capsys, "download", CONTENT_HASH, "-o", str(out_path), "--gateway", fake_gateway
    )
    assert code == 0, out
    assert out_path.read_bytes() == CONTENT
    assert json.loads(out)["sha256"] == CONTENT_HASH

    other = "ab" * 32
    bad = tmp_path / "bad.bin"
    code, out, err = run(capsys, "download", f"{fake_gateway}/download/{other}", "-o", str(bad))
    assert code == 1 and out == ""
    assert "SHA-256 mismatch" in err
    assert not bad.exists() and not list(tmp_path.glob("*.part"))


def test_gateway_error_shape_is_one_line_exit_4_or_3(
    fake_gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "verify", "ab" * 32, "--gateway", fake_gateway)
    assert code == cli.EXIT_REFUSED == 4 and out == ""
    assert err == "occ-client: gateway error 404 Not Found: No such file (file_hash: Unknown.)\n"

    code, out, err = run(capsys, "files", "--gateway", fake_gateway)  # an HTML 502 page
    assert code == cli.EXIT_NETWORK == 3
    assert "gateway error 502" in err and "Traceback" not in err and "secret" not in err


def test_unreachable_gateway_and_missing_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "files", "--gateway", "http://127.0.0.1:9")
    assert code == cli.EXIT_NETWORK and err.startswith(
        "occ-client: cannot reach the gateway at http://127.0.0.1:9/files"
    )
    code, _, err = run(capsys, "link", VECTOR_QUOTE)
    assert code == 1 and "no private key" in err and "Traceback" not in err
    code, _, err = run(capsys, "balance", "--address", ADDR0, "--token", TOKEN)
    assert code == 1 and "no chain RPC URL" in err
    code, _, err = run(capsys, "upload", "/nonexistent/file")
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, "upload", str(Path(__file__).parent))
    assert code == 1 and "is a directory, not a file" in err
    code, _, err = run(capsys, "--devchain", "/nonexistent/devchain.json", "link", VECTOR_QUOTE)
    assert code == 1 and err.startswith("occ-client: no dev chain file /nonexistent/devchain.json")
    code, _, err = run(capsys, "files", "--gateway", "localhost:5000")
    assert code == 1 and err == (
        "occ-client: --gateway 'localhost:5000' needs a scheme, e.g. http://localhost:5000\n"
    )


def test_version_and_api_key(
    fake_gateway: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"occ-client {cli.VERSION}\n"
    f = write(tmp_path / "a.txt", b"hello")
    assert run(capsys, "upload", str(f), "--gateway", fake_gateway, "--api-key", "k1")[0] == 0
    monkeypatch.setenv(config.ENV_API_KEY, "k2")
    assert run(capsys, "upload", str(f), "--gateway", fake_gateway)[0] == 0
    sent = [r["headers"].get("Authorization") for r in FakeGateway.received]
    assert sent == ["Bearer k1", "Bearer k2"]
    assert "k1" not in capsys.readouterr().err


def test_help_does_not_import_web3_or_eth_account() -> None:
    """`occ-client --help` starts without the chain libraries (1.2 s of imports before)."""
    probe = (
        "import sys, client.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('web3', 'eth_account')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


def test_gateway_error_formatting() -> None:
    resp = requests.Response()
    resp.status_code = 400
    resp.reason = "BAD REQUEST"
    resp._content = json.dumps(
        {
            "code": 400,
            "status": "Bad Request",
            "message": "Invalid input: files",
            "errors": {
                "files": {"0": {"length": ["Must be greater than 0."]}},
                "duration": ["Too long."],
            },
        }
    ).encode()
    err = GatewayError.from_response(resp)
    assert err.http_status == 400 and err.message == "Invalid input: files"
    assert str(err) == (
        "gateway error 400 Bad Request: Invalid input: files "
        "(files.0.length: Must be greater than 0.; duration: Too long.)"
    )
    resp._content = b"upstream exploded"
    assert str(GatewayError.from_response(resp)) == (
        "gateway error 400 BAD REQUEST: the gateway answered with an unexpected error page"
    )


# --- signing ---------------------------------------------------------------------------------------


def test_sign_prints_the_protocol_test_vector(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(config.ENV_KEY, KEY0)
    code, out, err = run(capsys, "sign", "--quote-id", VECTOR_QUOTE, "--nonce", VECTOR_NONCE)
    assert code == 0
    assert out == VECTOR_SIG + "\n"
    assert out.strip() == sign_text(KEY0, signed_text(VECTOR_QUOTE, VECTOR_NONCE))
    assert KEY0[2:] not in out + err and ADDR0 in err
    code, out, _ = run(
        capsys, "sign", "--quote-id", VECTOR_QUOTE, "--nonce", VECTOR_NONCE, "--json"
    )
    assert json.loads(out) == {
        "quoteId": VECTOR_QUOTE,
        "nonce": VECTOR_NONCE,
        "signedText": "0x89accafb4dd0d5ece3be833db66f6c804bafaf768c123e1c66f00cef2d4dec6c",
        "address": ADDR0,
        "signature": VECTOR_SIG,
    }


def test_key_sources_and_the_key_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devchain = tmp_path / "devchain.json"
    devchain.write_text(
        json.dumps({"chain_id": 31337, "test_user": {"address": ADDR0, "private_key": KEY0}})
    )
    argv = ["sign", "--quote-id", VECTOR_QUOTE, "--nonce", VECTOR_NONCE]
    code, out, err = run(capsys, *argv, "--devchain", str(devchain))
    assert code == 0 and out.strip() == VECTOR_SIG and "public test key" in err
    key_file = write(tmp_path / "key", (KEY0[2:] + "\n").encode())
    code, out, err = run(capsys, *argv, "--key-file", str(key_file))
    assert code == 0 and out.strip() == VECTOR_SIG
    bad = write(tmp_path / "bad", b"0x" + b"zz" * 32)
    code, out, err = run(capsys, *argv, "--key-file", str(bad))
    assert code == 1 and "not 32 bytes of hex" in err and "zzzz" not in err
    assert KEY0[2:] not in out + err


class FakeClock:
    """time.time and time.sleep for the nonce code: sleeping advances the clock."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_nonces_are_seconds_as_oceans_client_sends_them() -> None:
    before = int(time.time())
    n = keys.new_nonce(ADDR0)
    assert n.isdigit() and len(n) == 10 and before <= int(n) <= time.time()


def test_two_nonces_in_one_second_wait_for_the_next_never_run_ahead(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.25)
    path = tmp_path / "nonces.json"

    def take(address: str = ADDR0, after: str | None = None) -> str:
        return nonces.next_nonce(address, after, path=path, clock=clock.time, sleep=clock.sleep)

    assert take() == "1700000000" and clock.slept == []
    # a second call in the same second (another invocation: remembered in the file) waits
    assert take() == "1700000001" and clock.slept == [pytest.approx(0.75)]
    # never ahead of the clock: every nonce equals the current second when it is returned
    assert int(clock.now) == 1700000001
    # addresses are independent and compared without letter case
    assert take(ADDR0.lower()) == "1700000002"
    assert take("0x" + "ab" * 20) == "1700000002"
    # a nonce this process used (after=) counts too, even with no file
    assert (
        nonces.next_nonce(
            ADDR0, "1700000002", path=tmp_path / "other.json", clock=clock.time, sleep=clock.sleep
        )
        == "1700000003"
    )


def test_a_nonce_far_ahead_of_the_clock_is_refused_not_copied(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    with pytest.raises(nonces.NonceError, match="ahead of the clock"):
        nonces.next_nonce(
            ADDR0, "1700000000000", path=tmp_path / "n.json", clock=clock.time, sleep=clock.sleep
        )
    assert clock.slept == []


def test_a_call_whose_nonce_another_client_took_is_signed_again_in_a_later_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ocean's uploader.js signs with Math.round(now), up to half a second ahead: our next call
    in that second gets 409 "Nonce already used". It is signed again in a later second; any
    other 4xx, and a fourth clash, are reported as they are."""
    clock = FakeClock(1_700_000_000.2)
    take = functools.partial(
        nonces.next_nonce, path=tmp_path / "n.json", clock=clock.time, sleep=clock.sleep
    )
    monkeypatch.setattr(nonces, "next_nonce", take)
    account = keys.load_account(KEY0, "test")
    said: list[str] = []
    cfg: Any = type("Cfg", (), {"account": lambda self: account})()
    cfg.report = type("R", (), {"say": lambda self, m: said.append(m)})()
    server_last = 1_700_000_000  # taken by the other client in this second
    calls: list[tuple[str, str]] = []

    def link(nonce: str, signature: str) -> str:
        calls.append((nonce, signature))
        if int(nonce) <= server_last:
            raise GatewayError(409, "Nonce already used: it must be greater than the last one")
        return nonce

    assert commands.signed_call(cfg, VECTOR_QUOTE, link) == "1700000001"
    assert [n for n, _ in calls] == ["1700000000", "1700000001"]
    assert calls[1][1] == sign_text(KEY0, signed_text(VECTOR_QUOTE, "1700000001"))
    assert len(said) == 1 and "signing again" in said[0]
    assert int(clock.now) == 1_700_000_001  # waited for the second, never signed ahead of it

    def other(nonce: str, signature: str) -> str:
        raise GatewayError(409, "Quote already used")

    with pytest.raises(GatewayError, match="Quote already used"):
        commands.signed_call(cfg, VECTOR_QUOTE, other)
    server_last = 10**10
    with pytest.raises(GatewayError, match="Nonce already used"):
        commands.signed_call(cfg, VECTOR_QUOTE, link)
    assert len(calls) == 2 + 1 + commands.NONCE_RETRIES


# --- argument parsing ------------------------------------------------------------------------------


def test_common_options_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    a = parser.parse_args(["--gateway", "http://g:1", "files"])
    b = parser.parse_args(["files", "--gateway", "http://g:1", "--per-page", "5"])
    assert a.gateway == b.gateway == "http://g:1"
    assert b.per_page == 5 and a.per_page == 100
    c = parser.parse_args(["files"])
    assert c.gateway == "http://localhost:5000" and c.key_file is None and c.quiet is False


def test_paid_arguments() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["upload-paid", "a.txt", "b.txt", "--days", "2", "--token", "OCCT"])
    assert args.file == ["a.txt", "b.txt"] and args.type == "occ" and args.token == "OCCT"
    assert commands.duration_seconds(args) == 2 * 86400
    args = parser.parse_args(
        ["quote", "--file", "a", "b", "--duration", "60", "--chain-id", "31337"]
    )
    assert (
        args.file == ["a", "b"] and commands.duration_seconds(args) == 60 and args.chain_id == 31337
    )
    assert commands.duration_seconds(parser.parse_args(["quote", "--file", "a"])) == 30 * 86400
    args = parser.parse_args(["approve", "--quote-id", VECTOR_QUOTE])
    assert args.quote_id == VECTOR_QUOTE and args.amount is None
    args = parser.parse_args(["download", "ab" * 32, "-o", "-"])
    assert args.output == "-"


@pytest.mark.parametrize(
    "argv",
    [
        ["upload-paid"],
        ["quote", "--file", "a", "--days", "1", "--duration", "5"],
        ["sign", "--quote-id", VECTOR_QUOTE, "--nonce", "12345678901234"],
        ["sign", "--quote-id", VECTOR_QUOTE, "--nonce", "-5"],
        ["upload", "f", "--replication-factor", "0"],
        ["approve", "--quote-id", VECTOR_QUOTE, "--quote-file", "q.json"],
        ["nosuchcommand"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- status table, payment choice, amounts ----------------------------------------------------------


def test_status_table_matches_the_workers() -> None:
    assert all(status_name(s.value) == s.name for s in Status)
    for s in Status:
        assert is_final(s.value) == s.final, s
    assert status_name(250) == "PAYMENT_FAILED" and is_final(250)
    assert status_name(350) == "STORING" and not is_final(350)


TYPES: list[dict[str, Any]] = [
    {
        "type": "filecoin",
        "payment": [{"chainId": 1, "acceptedTokens": [{"title": "X", "value": "0x" + "1" * 40}]}],
    },
    {
        "type": "occ",
        "payment": [
            {"chainId": 1, "acceptedTokens": [{"title": "USDC", "value": "0x" + "2" * 40}]},
            {
                "chainId": "31337",
                "acceptedTokens": [
                    {"title": "OTHER", "value": "0x" + "3" * 40},
                    {"title": "OCCT", "value": TOKEN.lower()},
                ],
            },
        ],
    },
]


def test_pick_payment() -> None:
    lower = checks.check_address
    assert erc20.pick_payment(TYPES, "occ") == (1, lower("0x" + "2" * 40))
    assert erc20.pick_payment(TYPES, "occ", prefer_token=TOKEN) == (31337, TOKEN)
    assert erc20.pick_payment(TYPES, "occ", 31337) == (31337, lower("0x" + "3" * 40))
    assert erc20.pick_payment(TYPES, "occ", 31337, "occt") == (31337, TOKEN)
    assert erc20.pick_payment(TYPES, "occ", None, TOKEN) == (31337, TOKEN)
    with pytest.raises(ClientError, match="no storage type 'arweave'"):
        erc20.pick_payment(TYPES, "arweave")
    with pytest.raises(ClientError, match="chain 5"):
        erc20.pick_payment(TYPES, "occ", 5)
    with pytest.raises(ClientError, match="no accepted token called 'DAI'"):
        erc20.pick_payment(TYPES, "occ", 31337, "DAI")


def test_format_units() -> None:
    assert erc20.format_units(1_500_000_000_000_000_000, 18) == "1.5"
    assert erc20.format_units(1, 18) == "0.000000000000000001"
    assert erc20.format_units(10**21, 18) == "1000"
    assert erc20.format_units(42, 0) == "42"


def test_approve_reads_a_saved_quote(tmp_path: Path) -> None:
    quote = {
        "quoteId": VECTOR_QUOTE,
        "tokenAmount": "123456789012345678901234",
        "approveAddress": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "chainId": 31337,
        "tokenAddress": TOKEN,
        "expiresAt": 1,
    }
    assert cache.save_quote(quote, [tmp_path / "x"]) is not None
    args = cli.build_parser().parse_args(["approve", "--quote-id", VECTOR_QUOTE])
    amount, spender, token, chain_id = commands.approve_target(config.Config(args))
    assert amount == 123456789012345678901234  # beyond 2**53: never through a float
    assert spender == quote["approveAddress"] and token == TOKEN and chain_id == 31337
    with pytest.raises(ClientError, match="no saved quote"):
        cache.load_quote("f" * 32)


class LimitedGateway(BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 2) to the first ``limited`` requests, then 200."""

    limited = 2
    seen = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        LimitedGateway.seen += 1
        if LimitedGateway.seen <= LimitedGateway.limited:
            body = b'{"code": 429, "status": "Too Many Requests", "message": "slow down"}'
            self.send_response(429)
            self.send_header("Retry-After", "2")
        else:
            body = b'{"status": 400}'
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(("limited", "ok"), [(2, True), (gateway.RETRIES_429 + 1, False)])
def test_429_is_retried_after_retry_after_with_a_message(limited: int, ok: bool) -> None:
    LimitedGateway.limited, LimitedGateway.seen = limited, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), LimitedGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notices: list[str] = []
    waits: list[float] = []
    gw = gateway.Gateway(f"http://127.0.0.1:{server.server_address[1]}")
    gw.notice, gw.sleep = notices.append, waits.append
    try:
        if ok:
            assert gw.get_status("ab" * 16) == 400
        else:
            with pytest.raises(GatewayError, match="429"):
                gw.get_status("ab" * 16)
    finally:
        server.shutdown()
        server.server_close()
    retries = min(limited, gateway.RETRIES_429)
    assert waits == [2.0] * retries and LimitedGateway.seen == retries + 1
    assert len(notices) == retries and "retrying in 2 s" in notices[0]


def test_progress_is_lines_on_stderr_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "PROGRESS_EVERY_S", 0.0)
    with config.Reporter().bar(4 * config.MIB, "upload") as update:
        update(config.MIB)
        update(config.MIB)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "upload: 1.0 / 4.0 MiB (25%)",
        "upload: 2.0 / 4.0 MiB (50%)",
        "upload: 2.0 / 4.0 MiB (50%)",  # the closing line
    ]
    with config.Reporter(quiet=True).bar(10, "x") as update:
        update(10)
    assert capsys.readouterr().err == ""
