"""HTTP client for registered storage microservices (protocol.md §6).

Wire protocol, gateway -> microservice (JSON over HTTP(S), only to the registered URL):

``POST {url}/getQuote``
    body: the client's getQuote body ``{type, files:[{length}], duration, payment:{chainId,
    tokenAddress}, userAddress}``;
    answer: ``{tokenAmount: "<decimal string, smallest unit>", approveAddress?, chainId,
    tokenAddress}`` for the chain and token asked for (a JSON integer tokenAmount is accepted).
``POST {url}/upload``
    body: ``{quoteId, nonce, signature, files:[{url, length, sha256, content_type}]}`` where each
    ``url`` is the gateway's private ``/staged/<quoteId>/<index>?expires=<unix>&token=<hmac>``
    the microservice fetches the bytes from (valid 24 h, while the file is staged); answer: any 2xx.
``GET {url}/getStatus?quoteId=<id>``
    answer: ``{"status": int}`` with the codes of protocol.md §4 (0 to 499).
``GET {url}/getLink?quoteId=<id>``
    answer: the DDO ``files`` objects, one per file, e.g. Filecoin ``{type: "filecoin", CID,
    dealIDs}`` or Arweave ``{type: "arweave", transactionHash}``; the client adds
    ``transactionId`` (the DDO key) to Arweave objects.

Every call: no redirects, no proxies from the environment, connect and read timeouts, a cap on
the response size, and the host resolved and every resolved address checked before connecting
(loopback refused unless allowed; link-local, cloud-metadata, unspecified, multicast and reserved
addresses always refused). A failure raises RemoteError whose message is safe to show a client:
upstream text is never echoed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from occ_protocol.formats import ADDRESS_RE
from occ_storage.chunking import HASH_RE
from workers.remote.guard import RemoteError, check_url, guarded_session

QUOTE_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,128}")
AMOUNT_RE = re.compile(r"[0-9]{1,78}")  # up to 2^256
MAX_STATUS = 499
MAX_LINK_OBJECTS = 10_000


class RemoteStorageClient:
    """Calls one registered storage microservice over the wire protocol in this module's docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_bytes: int = 1_048_576,
        allow_loopback: bool = False,
    ) -> None:
        check_url(base_url, allow_loopback)
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self.allow_loopback = allow_loopback
        self.session = guarded_session(allow_loopback)

    @classmethod
    def for_settings(cls, base_url: str, settings: Any, **kwargs: Any) -> RemoteStorageClient:
        """A client honouring ``settings.allow_loopback_services``."""
        return cls(base_url, allow_loopback=bool(settings.allow_loopback_services), **kwargs)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RemoteStorageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol calls ---------------------------------------------------------------------

    def get_quote(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST {url}/getQuote; return {tokenAmount: "<decimal>", chainId, tokenAddress, approveAddress?}.

        The answer must be for the chain and token asked for (addresses compared as 20-byte values).
        """
        answer = self._call("POST", "getQuote", json_body=dict(body))
        if not isinstance(answer, dict):
            raise RemoteError("storage service sent a malformed quote")
        amount = answer.get("tokenAmount")
        if isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0:
            amount = str(amount)
        if not isinstance(amount, str) or AMOUNT_RE.fullmatch(amount) is None:
            raise RemoteError("storage service sent a malformed quote amount")
        chain_id = _int_or_none(answer.get("chainId"))
        token = answer.get("tokenAddress")
        if chain_id is None or not _is_address(token):
            raise RemoteError("storage service sent a malformed quote")
        payment = body.get("payment")
        asked: Mapping[str, Any] = payment if isinstance(payment, Mapping) else {}
        asked_chain = _int_or_none(asked.get("chainId"))
        asked_token = asked.get("tokenAddress")
        if asked_chain is not None and asked_chain != chain_id:
            raise RemoteError("storage service quoted another chain")
        if _is_address(asked_token) and str(asked_token).lower() != str(token).lower():
            raise RemoteError("storage service quoted another token")
        quote_answer: dict[str, Any] = {
            "tokenAmount": amount,
            "chainId": chain_id,
            "tokenAddress": token,
        }
        approve = answer.get("approveAddress")
        if approve is not None:
            if not _is_address(approve):
                raise RemoteError("storage service sent a malformed approve address")
            quote_answer["approveAddress"] = approve
        return quote_answer

    def upload(
        self, quote_id: str, nonce: str, signature: str, files: Sequence[Mapping[str, Any]]
    ) -> None:
        """POST {url}/upload {quoteId, nonce, signature, files:[{url, length, sha256, content_type}]}.

        Returns None once the microservice answered 2xx (it then fetches the files itself).
        """
        _check_quote_id(quote_id)
        wire_files = []
        for f in files:
            length, sha = f.get("length"), f.get("sha256")
            if (
                not isinstance(f.get("url"), str)
                or not isinstance(length, int)
                or isinstance(length, bool)
                or length < 0
                or not isinstance(sha, str)
                or HASH_RE.fullmatch(sha) is None
            ):
                raise ValueError(
                    "each file needs url, length >= 0 and a lowercase sha256 hex digest"
                )
            wire_files.append(
                {
                    "url": f["url"],
                    "length": length,
                    "sha256": sha,
                    "content_type": str(f.get("content_type") or "application/octet-stream"),
                }
            )
        body = {"quoteId": quote_id, "nonce": nonce, "signature": signature, "files": wire_files}
        self._call("POST", "upload", json_body=body, want_json=False)

    def get_status(self, quote_id: str) -> int:
        """GET {url}/getStatus?quoteId=; return the status code (0 to 499, protocol.md §4)."""
        _check_quote_id(quote_id)
        answer = self._call("GET", "getStatus", params={"quoteId": quote_id})
        status = answer.get("status") if isinstance(answer, dict) else None
        if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= MAX_STATUS:
            raise RemoteError("storage service sent a malformed status")
        return status

    def get_link(self, quote_id: str) -> list[dict[str, Any]]:
        """GET {url}/getLink?quoteId=; return the DDO files objects (Arweave ones get transactionId)."""
        _check_quote_id(quote_id)
        answer = self._call("GET", "getLink", params={"quoteId": quote_id})
        if not isinstance(answer, list) or not 0 < len(answer) <= MAX_LINK_OBJECTS:
            raise RemoteError("storage service sent a malformed link")
        links: list[dict[str, Any]] = []
        for obj in answer:
            if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not obj["type"]:
                raise RemoteError("storage service sent a malformed link")
            obj = dict(obj)
            if obj["type"] == "arweave":
                tx = obj.get("transactionHash")
                if not isinstance(tx, str) or not tx:
                    raise RemoteError(
                        "storage service sent an Arweave link without transactionHash"
                    )
                if obj.setdefault("transactionId", tx) != tx:
                    raise RemoteError("storage service sent an inconsistent Arweave link")
            elif obj["type"] == "filecoin":
                deals = obj.get("dealIDs", [])
                if (
                    not isinstance(obj.get("CID"), str)
                    or not obj["CID"]
                    or not isinstance(deals, list)
                ):
                    raise RemoteError("storage service sent a malformed Filecoin link")
            links.append(obj)
        return links

    # --- transport ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        want_json: bool = True,
    ) -> Any:
        url = f"{self.base_url}/{endpoint}"
        deadline = time.monotonic() + self.timeout
        try:
            resp = self.session.request(
                method,
                url,
                json=json_body,
                params=params,
                allow_redirects=False,
                stream=True,
                timeout=(self.timeout, self.timeout),
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            )
        except RemoteError:
            raise
        except requests.Timeout:
            raise RemoteError("storage service timed out") from None
        except requests.RequestException:
            raise RemoteError("storage service is unreachable") from None
        with resp:
            if 300 <= resp.status_code < 400:
                raise RemoteError(
                    "storage service answered with a redirect (not followed)", resp.status_code
                )
            if not 200 <= resp.status_code < 300:
                raise RemoteError(
                    f"storage service answered HTTP {resp.status_code}", resp.status_code
                )
            raw = self._read_capped(resp, deadline)
        if not want_json:
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RemoteError("storage service sent malformed JSON") from None

    def _read_capped(self, resp: requests.Response, deadline: float) -> bytes:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise RemoteError("storage service response is too large")
        body = bytearray()
        try:
            for chunk in resp.iter_content(chunk_size=65536):
                body += chunk
                if len(body) > self.max_bytes:
                    raise RemoteError("storage service response is too large")
                if time.monotonic() > deadline:
                    raise RemoteError("storage service timed out")
        except requests.RequestException:
            raise RemoteError("storage service response was cut short") from None
        return bytes(body)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return value if isinstance(value, int) else None


def _is_address(value: object) -> bool:
    return isinstance(value, str) and ADDRESS_RE.fullmatch(value) is not None


def _check_quote_id(quote_id: str) -> None:
    if not isinstance(quote_id, str) or QUOTE_ID_RE.fullmatch(quote_id) is None:
        raise ValueError("quote_id must be 1 to 128 characters of [0-9A-Za-z_-]")
