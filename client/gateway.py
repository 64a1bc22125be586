"""The gateway's public HTTP API: the paid-upload protocol and the direct storage routes.

Nothing here prints except the one notice of a rate-limited retry: results are returned and
failures raise ClientError (GatewayError for an HTTP error from the gateway).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote as url_quote

import requests

from client.checks import check_hash
from client.errors import ClientError, GatewayError, NetworkError
from client.streams import BLOCK_SIZE, FilePart, MultipartStream, Progress, ProgressReader
from occ_protocol.formats import is_file_hash, is_job_id

DEFAULT_GATEWAY = "http://localhost:5000"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
RETRIES_429 = 3  # a rate-limited request is sent again at most this many times
MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is reported, not waited for


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
        if not is_job_id(job_id):
            raise ClientError("job id must be 32 lowercase hex characters")
        return dict(self.json("GET", "/jobs/" + job_id))
