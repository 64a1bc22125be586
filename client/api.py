"""A small client library for the OCC gateway: the paid-upload protocol and the direct storage API.

The command-line tool (``client/cli.py``) is a thin layer over this module. Nothing here prints:
progress is reported through callbacks, results are returned, and failures raise ClientError
(GatewayError for an HTTP error from the gateway, with its ``{code, status, message, errors}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote as url_quote

import requests
from eth_typing import ChecksumAddress

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

# web3 and eth_account take over a second to import: the functions that need them import them,
# so `occ-client --help` and the storage commands start fast.

from client import nonces
from occ_protocol.formats import is_address, is_file_hash, is_nonce, is_quote_id
from occ_protocol.signatures import sign_text, signed_text

DEFAULT_GATEWAY = "http://localhost:5000"
DEFAULT_DEVCHAIN = "data/devchain.json"
BLOCK_SIZE = 64 * 1024  # the most read from a file at once
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
RETRIES_429 = 3  # a rate-limited request is sent again at most this many times
MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is reported, not waited for


Progress = Callable[[int], None]  # called with the number of bytes just sent or received

# --- errors --------------------------------------------------------------------------------------


class ClientError(Exception):
    """Anything the user should see as one line: missing configuration, bad input, a failed step."""


class NetworkError(ClientError):
    """The gateway or the chain could not be reached or did not answer in time."""


class GatewayError(ClientError):
    """An HTTP error answered by the gateway, in its ``{code, status, message, errors}`` shape."""

    def __init__(
        self,
        http_status: int,
        message: str,
        status: str = "",
        errors: Mapping[str, Any] | None = None,
    ) -> None:
        self.http_status = http_status
        self.status = status
        self.message = message
        self.errors = dict(errors or {})
        super().__init__(format_gateway_error(http_status, status, message, self.errors))

    @classmethod
    def from_response(cls, resp: requests.Response) -> GatewayError:
        """Build from an error response; a body not in the gateway's shape is summarised, not echoed."""
        code = resp.status_code
        reason = resp.reason or ""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            errors = body.get("errors")
            return cls(
                int(body.get("code") or code),
                body["message"],
                str(body.get("status") or reason),
                errors if isinstance(errors, dict) else None,
            )
        return cls(code, "the gateway answered with an unexpected error page", reason)


def _flatten_errors(errors: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(errors, Mapping):
        for key, value in errors.items():
            out += _flatten_errors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(errors, list | tuple):
        texts = [str(e) for e in errors if not isinstance(e, Mapping | list | tuple)]
        if texts:
            out.append(f"{prefix}: {' '.join(texts)}" if prefix else " ".join(texts))
        for e in errors:
            if isinstance(e, Mapping | list | tuple):
                out += _flatten_errors(e, prefix)
    elif errors is not None:
        out.append(f"{prefix}: {errors}" if prefix else str(errors))
    return out


def format_gateway_error(
    code: int, status: str, message: str, errors: Mapping[str, Any] | None
) -> str:
    """One line: ``gateway error 400 Bad Request: Quote expired (files: Missing data...)``."""
    head = f"gateway error {code}" + (f" {status}" if status else "")
    text = f"{head}: {message}"
    details = _flatten_errors(errors or {})
    if details:
        text += " (" + "; ".join(details) + ")"
    return text


# --- streaming multipart/form-data -----------------------------------------------------------------


def _quote_header_value(value: str) -> str:
    """Escape a name or filename for a Content-Disposition parameter (as browsers do)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass
class FilePart:
    """A file part: the form field name, the path to read, and the filename sent."""

    name: str
    path: Path
    filename: str = ""
    content_type: str = "application/octet-stream"
    size: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.filename:
            self.filename = self.path.name
        self.size = os.stat(self.path).st_size


Opener = Callable[[Path], BinaryIO]


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


class MultipartStream:
    """A multipart/form-data body read in blocks: a file-like object with an exact length.

    ``requests`` sends it with ``Content-Length: len(stream)``; files are opened one at a time,
    read at most ``block_size`` bytes at a time and never held whole in memory. ``progress`` is
    called with the number of file bytes each time a block of a file is read. A file whose size
    changed since the stream was built raises ClientError (the length would be wrong).
    """

    def __init__(
        self,
        fields: Sequence[tuple[str, str]] = (),
        files: Sequence[FilePart] = (),
        boundary: str | None = None,
        block_size: int = BLOCK_SIZE,
        progress: Progress | None = None,
        opener: Opener = _open_binary,
    ) -> None:
        self.boundary = boundary or secrets.token_hex(16)
        self.block_size = block_size
        self.progress = progress
        self.opener = opener
        self.files = list(files)
        b = self.boundary.encode("ascii")
        self._segments: list[bytes | FilePart] = []
        for name, value in fields:
            self._segments.append(
                b"--"
                + b
                + b"\r\n"
                + f'Content-Disposition: form-data; name="{_quote_header_value(name)}"\r\n\r\n'.encode()
                + value.encode("utf-8")
                + b"\r\n"
            )
        for part in self.files:
            self._segments.append(
                b"--"
                + b
                + b"\r\n"
                + (
                    f'Content-Disposition: form-data; name="{_quote_header_value(part.name)}"; '
                    f'filename="{_quote_header_value(part.filename)}"\r\n'
                    f"Content-Type: {part.content_type}\r\n\r\n"
                ).encode()
            )
            self._segments.append(part)
            self._segments.append(b"\r\n")
        self._segments.append(b"--" + b + b"--\r\n")
        self.length = sum(len(s) if isinstance(s, bytes) else s.size for s in self._segments)
        self._index = 0
        self._offset = 0  # within the current bytes segment, or bytes read of the current file
        self._current: BinaryIO | None = None
        self.sent = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.read(self.block_size)
            if not block:
                return
            yield block

    def _next_segment(self) -> None:
        self._index += 1
        self._offset = 0

    def _read_file(self, part: FilePart, n: int) -> bytes:
        if self._current is None:
            self._current = self.opener(part.path)
        want = min(n, self.block_size, part.size - self._offset)
        data = self._current.read(want) if want > 0 else b""
        if want > 0 and not data:
            self.close()
            raise ClientError(f"{part.path} became shorter while it was being uploaded")
        self._offset += len(data)
        if self._offset >= part.size:
            extra = self._current.read(1)
            self.close()
            if extra:
                raise ClientError(f"{part.path} grew while it was being uploaded")
            self._next_segment()
        if data and self.progress is not None:
            self.progress(len(data))
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Return up to ``size`` bytes of the body (all that is left if size is None or < 0)."""
        limit = self.length if size is None or size < 0 else size
        out: list[bytes] = []
        got = 0
        while got < limit and self._index < len(self._segments):
            seg = self._segments[self._index]
            if isinstance(seg, bytes):
                piece = seg[self._offset : self._offset + (limit - got)]
                self._offset += len(piece)
                if self._offset >= len(seg):
                    self._next_segment()
            else:
                if seg.size == 0:
                    self._next_segment()
                    continue
                piece = self._read_file(seg, limit - got)
            out.append(piece)
            got += len(piece)
        data = b"".join(out)
        self.sent += len(data)
        return data

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


class ProgressReader:
    """A file opened for a raw (non-multipart) body: read in blocks, progress reported, exact length."""

    def __init__(
        self, path: Path, block_size: int = BLOCK_SIZE, progress: Progress | None = None
    ) -> None:
        self.path = Path(path)
        self.length = os.stat(self.path).st_size
        self.block_size = block_size
        self.progress = progress
        self._f: IO[bytes] = open(self.path, "rb")  # noqa: SIM115 - closed by close()

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.read(self.block_size)
            if not block:
                return
            yield block

    def read(self, size: int | None = -1) -> bytes:
        n = self.block_size if size is None or size < 0 else min(size, self.block_size)
        data = self._f.read(n)
        if data and self.progress is not None:
            self.progress(len(data))
        return data

    def close(self) -> None:
        self._f.close()


# --- keys, nonces and signatures -----------------------------------------------------------------


def new_nonce(address: str, after: str | int | None = None) -> str:
    """A nonce for ``address`` in whole seconds, as Ocean's client sends them (client/nonces.py)."""
    try:
        return nonces.next_nonce(address, after)
    except nonces.NonceError as e:
        raise ClientError(str(e)) from None


def sign_request(private_key: str | bytes, quote_id: str, nonce: str) -> str:
    """EIP-191 signature of signed_text(quoteId, nonce) (protocol.md §2), 0x-hex, 65 bytes."""
    if not is_nonce(nonce):
        raise ClientError("nonce must be 1 to 13 decimal digits")
    return sign_text(private_key, signed_text(quote_id, nonce))


def load_account(private_key: str, source: str) -> LocalAccount:
    """An eth-account LocalAccount; the key itself never appears in an error message."""
    key = private_key.strip()
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
        raise ClientError(f"the private key from {source} is not 32 bytes of hex")
    try:
        from eth_account import Account

        account: LocalAccount = Account.from_key(key)
    except Exception:
        raise ClientError(f"the private key from {source} is not a valid secp256k1 key") from None
    return account


def read_key_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise ClientError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    return text.splitlines()[0].strip() if text else ""


def load_devchain(path: str | Path | None) -> dict[str, Any]:
    """The dev-chain JSON written by ``make run`` ({} if the path is None or absent)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read dev chain config {p}: {exc}") from None
    if not isinstance(data, dict):
        raise ClientError(f"dev chain config {p} is not a JSON object")
    return data


def check_address(value: str, what: str = "address") -> ChecksumAddress:
    if not is_address(value):
        raise ClientError(f"{what} must be 0x followed by 40 hex characters")
    from eth_utils.address import to_checksum_address

    return to_checksum_address(value)


def check_quote_id(value: str) -> str:
    if not is_quote_id(value):
        raise ClientError("quoteId must be 32 hex characters")
    return value


def check_hash(value: str) -> str:
    if not is_file_hash(value):
        raise ClientError("file hash must be 64 hex characters (SHA-256)")
    return value.lower()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK_SIZE):
            h.update(block)
    return h.hexdigest()


# --- the gateway's HTTP API ------------------------------------------------------------------------


def retry_after(resp: requests.Response) -> float | None:
    """Seconds a 429 asks the client to wait (Retry-After in seconds); None if unusable."""
    try:
        wait = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER_S else None


class Gateway:
    """The gateway's public HTTP API (protocol.md §1 and the direct storage routes)."""

    # what a rate-limited request does: a line on stderr, then a pause (tests replace both)
    notice: Callable[[str], None] = staticmethod(
        lambda msg: print(f"occ-client: {msg}", file=sys.stderr)
    )
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        base_url: str = DEFAULT_GATEWAY,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout

    def url(self, path: str) -> str:
        return self.base_url + path

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        """Send a request; a 429 is retried after its Retry-After (at most RETRIES_429 times,
        each wait at most MAX_RETRY_AFTER_S) when the body can be sent again; 4xx/5xx raise."""
        kw.setdefault("timeout", self.timeout)
        body = kw.get("data")
        replayable = body is None or isinstance(body, bytes | str | dict)  # not a stream
        for attempt in range(1, RETRIES_429 + 2):
            resp = self._send(method, url, **kw)
            wait = retry_after(resp) if resp.status_code == 429 else None
            if wait is None or not replayable or attempt > RETRIES_429:
                break
            resp.close()
            self.notice(
                f"the gateway is rate limiting {url.split('?')[0]}: retrying in {wait:g} s "
                f"({attempt}/{RETRIES_429})"
            )
            self.sleep(wait)
        if resp.status_code >= 400:
            err = GatewayError.from_response(resp)
            resp.close()
            raise err
        return resp

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        try:
            return self.session.request(method, url, **kw)
        except requests.ConnectionError:
            raise NetworkError(f"cannot reach the gateway at {url.split('?')[0]}") from None
        except requests.Timeout:
            raise NetworkError(
                f"the gateway at {url.split('?')[0]} did not answer in time"
            ) from None
        except requests.RequestException as exc:
            raise ClientError(
                f"request to {url.split('?')[0]} failed: {type(exc).__name__}"
            ) from None

    def json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, self.url(path), **kw)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(
                f"the gateway answered {path.split('?')[0]} with something not JSON"
            ) from None

    # paid-upload protocol
    def types(self) -> list[dict[str, Any]]:
        data = self.json("GET", "/")
        if not isinstance(data, list):
            raise ClientError("GET / did not return a list of storage types")
        return data

    def get_quote(self, body: Mapping[str, Any]) -> dict[str, Any]:
        data = self.json("POST", "/getQuote", json=dict(body))
        for key in ("quoteId", "tokenAmount", "approveAddress", "chainId", "tokenAddress"):
            if key not in data:
                raise ClientError(f"the quote has no {key}")
        return dict(data)

    def upload_paid(
        self,
        quote_id: str,
        nonce: str,
        signature: str,
        paths: Sequence[str | Path],
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        parts = [FilePart(f"file{i}", Path(p)) for i, p in enumerate(paths, start=1)]
        body = MultipartStream(files=parts, progress=progress)
        try:
            return dict(
                self.json(
                    "POST",
                    "/upload",
                    params={"quoteId": quote_id, "nonce": nonce, "signature": signature},
                    data=body,
                    headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
                )
            )
        finally:
            body.close()

    def get_status(self, quote_id: str) -> int:
        data = self.json("GET", "/getStatus", params={"quoteId": quote_id})
        try:
            return int(data["status"])
        except (KeyError, TypeError, ValueError):
            raise ClientError("getStatus did not return a status code") from None

    def get_link(self, quote_id: str, nonce: str, signature: str) -> list[dict[str, Any]]:
        data = self.json(
            "GET", "/getLink", params={"quoteId": quote_id, "nonce": nonce, "signature": signature}
        )
        if not isinstance(data, list):
            raise ClientError("getLink did not return a list of link objects")
        return data

    # direct storage
    def upload(
        self,
        path: str | Path,
        replication_factor: int | None = None,
        raw: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        path = Path(path)
        if raw:
            params: dict[str, Any] = {"name": path.name}
            if replication_factor is not None:
                params["replication_factor"] = replication_factor
            reader = ProgressReader(path, progress=progress)
            try:
                return dict(
                    self.json(
                        "PUT",
                        "/upload",
                        params=params,
                        data=reader,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(len(reader)),
                        },
                    )
                )
            finally:
                reader.close()
        fields = (
            [] if replication_factor is None else [("replication_factor", str(replication_factor))]
        )
        body = MultipartStream(fields=fields, files=[FilePart("file", path)], progress=progress)
        try:
            return dict(
                self.json(
                    "POST",
                    "/upload",
                    data=body,
                    headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
                )
            )
        finally:
            body.close()

    def download(
        self,
        url_or_hash: str,
        out: str | Path,
        expected_sha256: str | None = None,
        on_start: Callable[[int | None], None] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Stream a file to ``out`` ("-" for stdout) and check its SHA-256.

        ``url_or_hash`` is a file hash (GET /download/<hash> on this gateway) or a full link URL
        (its last path segment is the expected hash when it is one). A file written to a path is
        first written next to it and renamed only once the hash matches.
        """
        if url_or_hash.startswith(("http://", "https://")):
            url = url_or_hash
            last = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            expected = expected_sha256 or (last if is_file_hash(last) else None)
        else:
            expected = check_hash(url_or_hash)
            url = self.url("/download/" + url_quote(expected))
        if expected is not None:
            expected = check_hash(expected)
        resp = self.request("GET", url, stream=True)
        length = resp.headers.get("Content-Length")
        if on_start is not None:
            on_start(int(length) if length and length.isdigit() else None)
        h = hashlib.sha256()
        size = 0
        to_stdout = str(out) == "-"
        tmp_path: Path | None = None
        try:
            if to_stdout:
                sink: IO[bytes] = sys.stdout.buffer
            else:
                target = Path(out)
                fd, name = tempfile.mkstemp(
                    prefix=f".{target.name}.", suffix=".part", dir=target.parent
                )
                tmp_path = Path(name)
                sink = os.fdopen(fd, "wb")
            try:
                for block in resp.iter_content(BLOCK_SIZE):
                    h.update(block)
                    size += len(block)
                    sink.write(block)
                    if progress is not None:
                        progress(len(block))
            except requests.RequestException:
                raise ClientError("the download was interrupted") from None
            finally:
                if to_stdout:
                    sink.flush()
                else:
                    sink.close()
            digest = h.hexdigest()
            if length and length.isdigit() and int(length) != size:
                raise ClientError(f"download incomplete: {size} of {length} bytes")
            if expected is not None and digest != expected:
                raise ClientError(f"SHA-256 mismatch: expected {expected}, got {digest}")
            if tmp_path is not None:
                os.replace(tmp_path, Path(out))
                tmp_path = None
        finally:
            resp.close()
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
        return {
            "path": str(out),
            "url": url,
            "size": size,
            "sha256": digest,
            "verified": expected is not None,
        }

    def files(self, page: int = 1, per_page: int = 100) -> dict[str, Any]:
        return dict(self.json("GET", "/files", params={"page": page, "per_page": per_page}))

    def verify(self, file_hash: str) -> dict[str, Any]:
        return dict(self.json("GET", "/verify/" + check_hash(file_hash)))

    def delete(self, file_hash: str) -> None:
        self.request("DELETE", self.url("/files/" + check_hash(file_hash))).close()

    def rebalance(self, file_hash: str, replication_factor: int) -> dict[str, Any]:
        return dict(
            self.json(
                "POST",
                "/rebalance/" + check_hash(file_hash),
                json={"replication_factor": replication_factor},
            )
        )

    def network_status(self) -> dict[str, Any]:
        return dict(self.json("GET", "/status"))

    def history(
        self, address: str, nonce: str, signature: str, page: int, page_size: int
    ) -> list[dict[str, Any]]:
        params = {
            "userAddress": address,
            "nonce": nonce,
            "signature": signature,
            "page": page,
            "pageSize": page_size,
        }
        return list(self.json("GET", "/getHistory", params=params))

    def job(self, job_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise ClientError("job id must be 32 lowercase hex characters")
        return dict(self.json("GET", "/jobs/" + job_id))


# --- the ERC-20 token on chain -------------------------------------------------------------------

ERC20_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "type": "function",
        "name": "allowance",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "balanceOf",
        "stateMutability": "view",
        "inputs": [{"name": "account", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "type": "function",
        "name": "symbol",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
]


def format_units(amount: int, decimals: int) -> str:
    """``1500000000000000000, 18`` -> ``"1.5"`` (exact, no floats)."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals) if decimals > 0 else (abs(amount), 0)
    text = str(whole)
    if decimals > 0 and frac:
        text += "." + str(frac).rjust(decimals, "0").rstrip("0")
    return sign + text


class Token:
    """An ERC-20 token through a JSON-RPC node: approve (signed locally), balanceOf, allowance."""

    def __init__(self, rpc_url: str, token_address: str, chain_id: int | None = None) -> None:
        self.rpc_url = rpc_url
        from web3 import Web3

        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.address = check_address(token_address, "token address")
        self.contract = self.w3.eth.contract(address=self.address, abi=ERC20_ABI)
        self.expected_chain_id = chain_id

    def _rpc(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except requests.RequestException:
            raise NetworkError(f"cannot reach the chain RPC at {self.rpc_url} ({what})") from None
        except ClientError:
            raise
        except Exception as exc:
            raise ClientError(f"{what} failed: {type(exc).__name__}: {exc}") from None

    def check_chain(self) -> int:
        chain_id = int(self._rpc("eth_chainId", lambda: self.w3.eth.chain_id))
        if self.expected_chain_id is not None and chain_id != int(self.expected_chain_id):
            raise ClientError(
                f"the RPC at {self.rpc_url} is chain {chain_id}, but the quote is for chain "
                f"{self.expected_chain_id}"
            )
        return chain_id

    def balance_of(self, owner: str) -> int:
        who = check_address(owner)
        return int(self._rpc("balanceOf", lambda: self.contract.functions.balanceOf(who).call()))

    def allowance(self, owner: str, spender: str) -> int:
        o, s = check_address(owner), check_address(spender, "spender")
        return int(self._rpc("allowance", lambda: self.contract.functions.allowance(o, s).call()))

    def metadata(self) -> dict[str, Any]:
        """symbol and decimals (None when the token does not implement them)."""
        out: dict[str, Any] = {"symbol": None, "decimals": None}
        for key in out:
            try:
                out[key] = getattr(self.contract.functions, key)().call()
            except Exception:
                out[key] = None
        return out

    def approve(
        self, account: LocalAccount, spender: str, amount: int, timeout: float = 120
    ) -> dict[str, Any]:
        """Send ``approve(spender, amount)`` from ``account`` and wait for a successful receipt."""
        spender = check_address(spender, "spender")
        if amount < 0 or amount >= 2**256:
            raise ClientError("amount must be between 0 and 2**256 - 1")
        chain_id = self.check_chain()

        def build_and_send() -> bytes:
            nonce = self.w3.eth.get_transaction_count(account.address, "pending")
            tx = self.contract.functions.approve(spender, amount).build_transaction(
                {"from": account.address, "nonce": nonce, "chainId": chain_id}
            )
            signed = account.sign_transaction(dict(tx))  # type: ignore[arg-type]
            return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))

        tx_hash = self._rpc("sending approve", build_and_send)
        receipt = self._rpc(
            "waiting for the approve receipt",
            lambda: self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=timeout, poll_latency=0.2
            ),
        )
        hex_hash = "0x" + tx_hash.hex()
        if int(receipt["status"]) != 1:
            raise ClientError(f"approve transaction {hex_hash} reverted")
        return {
            "txHash": hex_hash,
            "blockNumber": int(receipt["blockNumber"]),
            "owner": account.address,
            "spender": spender,
            "token": self.address,
            "amount": str(amount),
        }


# --- choosing a chain and token from GET / ---------------------------------------------------------


def pick_payment(
    types: Sequence[Mapping[str, Any]],
    storage_type: str,
    chain_id: int | None = None,
    token: str | None = None,
    prefer_token: str | None = None,
) -> tuple[int, str]:
    """(chainId, tokenAddress) accepted by ``storage_type``.

    ``token`` is an address or a symbol (matched against ``title``). Without a chain id the first
    payment entry is used (the one holding ``prefer_token`` if there is one); without a token, the
    preferred token if accepted, else the first accepted token.
    """
    entry = next(
        (t for t in types if isinstance(t, Mapping) and t.get("type") == storage_type), None
    )
    if entry is None:
        known = ", ".join(str(t.get("type")) for t in types if isinstance(t, Mapping))
        raise ClientError(
            f"the gateway has no storage type {storage_type!r} (it has: {known or 'none'})"
        )
    payments = [p for p in entry.get("payment") or [] if isinstance(p, Mapping)]

    def tokens_of(p: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [t for t in p.get("acceptedTokens") or [] if isinstance(t, Mapping) and "value" in t]

    def has(p: Mapping[str, Any], address: str | None) -> bool:
        return address is not None and any(
            str(t["value"]).lower() == address.lower() for t in tokens_of(p)
        )

    if chain_id is not None:
        payments = [p for p in payments if str(p.get("chainId")) == str(chain_id)]
        if not payments:
            raise ClientError(
                f"storage type {storage_type!r} does not accept payment on chain {chain_id}"
            )
    if not payments:
        raise ClientError(f"storage type {storage_type!r} lists no payment methods")
    token_is_address = token is not None and is_address(token)
    wanted = token if token_is_address else prefer_token
    chosen = next((p for p in payments if has(p, wanted)), payments[0])
    accepted = tokens_of(chosen)
    if token is not None:
        if token_is_address:
            if not has(chosen, token):
                raise ClientError(f"token {token} is not accepted on chain {chosen.get('chainId')}")
            address = token
        else:
            match = [t for t in accepted if str(t.get("title", "")).lower() == token.lower()]
            if not match:
                titles = ", ".join(str(t.get("title")) for t in accepted)
                raise ClientError(
                    f"no accepted token called {token!r} (accepted: {titles or 'none'})"
                )
            address = str(match[0]["value"])
    elif has(chosen, prefer_token):
        address = str(prefer_token)
    elif accepted:
        address = str(accepted[0]["value"])
    else:
        raise ClientError(f"no accepted tokens on chain {chosen.get('chainId')}")
    try:
        cid = int(chosen["chainId"])
    except (KeyError, TypeError, ValueError):
        raise ClientError("the gateway listed a payment method without a numeric chainId") from None
    return cid, check_address(address, "token address")


# --- a local record of quotes, so `approve --quote-id` and `upload-paid --quote-id` work ------------


def save_quote(quote: Mapping[str, Any], files: Sequence[str | Path] = ()) -> Path | None:
    """Remember a quote (public data only) under the cache directory; None if that is not writable."""
    try:
        quote_id = check_quote_id(str(quote.get("quoteId", "")))
        d = nonces.cache_dir() / "quotes"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{quote_id.lower()}.json"
        record = {**quote, "files": [str(Path(f).resolve()) for f in files]}
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
    except (OSError, ClientError):
        return None


def load_quote(quote_id: str) -> dict[str, Any]:
    check_quote_id(quote_id)
    path = nonces.cache_dir() / "quotes" / f"{quote_id.lower()}.json"
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        raise ClientError(
            f"no saved quote {quote_id} (quotes made with `occ-client quote` are kept in {path.parent}); "
            "pass --amount and --spender instead"
        ) from None
    if not isinstance(data, dict):
        raise ClientError(f"saved quote {path} is not a JSON object")
    return data
