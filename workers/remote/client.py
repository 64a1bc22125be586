"""HTTP client for registered storage microservices (protocol.md §6), and signed URLs of staged files.

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

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from occ_protocol.formats import ADDRESS_RE

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
QUOTE_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,128}")
AMOUNT_RE = re.compile(r"[0-9]{1,78}")  # up to 2^256
SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_STATUS = 499
MAX_LINK_OBJECTS = 10_000


class RemoteError(Exception):
    """A call to a storage microservice failed; ``str(err)`` is safe to show to a client.

    ``status_code`` is the upstream HTTP status when there was one.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RemoteAddressError(RemoteError):
    """The microservice's host is, or resolves to, an address the gateway must not call."""


# --- address policy ----------------------------------------------------------------------------


def refused_reason(address: str | IPAddress, allow_loopback: bool = False) -> str | None:
    """Return why the gateway must not connect to ``address``, or None if it may.

    Refused always: link-local (169.254/16, fe80::/10), metadata endpoints, unspecified,
    multicast and reserved addresses; loopback unless ``allow_loopback``. IPv4-mapped IPv6
    addresses are judged by the IPv4 address they map.
    """
    try:
        ip: IPAddress = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:  # before is_reserved: ::1 lies in the reserved ::/8
        return None if allow_loopback else "a loopback address"
    if ip.is_multicast or ip.is_reserved:
        return "a multicast or reserved address"
    return None


def resolve_checked(host: str, port: int, allow_loopback: bool = False) -> list[tuple[Any, ...]]:
    """Return getaddrinfo results for (host, port) (TCP) after checking every resolved address.

    Raises RemoteAddressError if the name does not resolve or any address is refused (one bad
    address refuses the host: DNS answers can be chosen by an attacker).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise RemoteAddressError("storage service host does not resolve") from None
    if not infos:
        raise RemoteAddressError("storage service host does not resolve")
    for info in infos:
        reason = refused_reason(str(info[4][0]), allow_loopback)
        if reason is not None:
            raise RemoteAddressError(f"storage service host resolves to {reason}")
    return infos


def check_url(url: str, allow_loopback: bool = False) -> None:
    """Check a microservice URL's form: http(s), a host, no credentials; IP-literal hosts by policy.

    Raises RemoteAddressError. Host names are resolved and checked at connection time instead.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise RemoteAddressError("storage service URL is malformed") from None
    if parts.scheme not in ("http", "https") or not host:
        raise RemoteAddressError("storage service URL must be http(s) with a host")
    if parts.username is not None or parts.password is not None:
        raise RemoteAddressError("storage service URL must not carry credentials")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    reason = refused_reason(host, allow_loopback)
    if reason is not None:
        raise RemoteAddressError(f"storage service URL points to {reason}")


class _GuardedConnectionMixin:
    """Resolves, checks every address, then connects to a checked one (no second DNS lookup)."""

    allow_loopback = False
    _dns_host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        infos = resolve_checked(self._dns_host, self.port, self.allow_loopback)
        last: OSError | None = None
        for family, socktype, proto, _name, sockaddr in infos:
            sock = socket.socket(family, socktype, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(self.timeout, int | float):
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _LoopbackHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    allow_loopback = True


class _LoopbackHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    allow_loopback = True


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _LoopbackHTTPPool(HTTPConnectionPool):
    ConnectionCls = _LoopbackHTTPConnection


class _LoopbackHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _LoopbackHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools: dict[str, type[HTTPConnectionPool]] = (
            {"http": _LoopbackHTTPPool, "https": _LoopbackHTTPSPool}
            if self._allow_loopback
            else {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        )
        self.poolmanager.pool_classes_by_scheme = pools


# --- the client ------------------------------------------------------------------------------


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
        self.session = requests.Session()
        self.session.trust_env = False  # never an environment proxy or .netrc credentials
        adapter = _GuardedAdapter(allow_loopback)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

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
                or SHA256_RE.fullmatch(sha) is None
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


# --- signed URLs of staged files (served by api/private.py) ----------------------------------

STAGED_KEY_CONTEXT = b"occ staged-file url v1"
STAGED_URL_TTL_S = 24 * 3600  # as long as a paid upload waits for its microservice


def staged_key(master_key: bytes | None = None) -> bytes:
    """Return the HMAC key of staged-file URLs, derived from the runtime's secret key.

    Derived (HMAC of a fixed context) so that it is independent of the sketch PRF that uses the
    same secret.
    """
    if master_key is None:
        from workers.runtime import get_runtime

        master_key = get_runtime().sketch_key
    return hmac.new(master_key, STAGED_KEY_CONTEXT, hashlib.sha256).digest()


def staged_token(quote_id: str, index: int, expires: int, key: bytes | None = None) -> str:
    """Return the hex HMAC-SHA256 of f"{quote_id}:{index}:{expires}" that authorises fetching one
    staged file until the unix time ``expires``.

    ``key`` is the runtime's secret (default: get_runtime().sketch_key).
    """
    message = f"{quote_id}:{int(index)}:{int(expires)}".encode()
    return hmac.new(staged_key(key), message, hashlib.sha256).hexdigest()


def check_staged_token(
    quote_id: str,
    index: int,
    expires: int,
    token: str,
    key: bytes | None = None,
    now: float | None = None,
) -> bool:
    """Return True if ``token`` authorises staged file ``index`` of ``quote_id`` and ``expires``
    has not passed (constant-time comparison)."""
    if not isinstance(token, str) or not token.isascii():
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(staged_token(quote_id, index, expires, key), token.lower())


def staged_file_url(
    base_url: str,
    quote_id: str,
    index: int,
    key: bytes | None = None,
    ttl_s: float = STAGED_URL_TTL_S,
    now: float | None = None,
) -> str:
    """Return the private-API URL a microservice fetches staged file ``index`` of ``quote_id`` from,
    valid for ``ttl_s`` seconds.

    ``base_url`` is the private API's base as the microservice reaches it (e.g. http://gateway:5001).
    """
    expires = int((time.time() if now is None else now) + ttl_s)
    token = staged_token(quote_id, index, expires, key)
    return (
        f"{base_url.rstrip('/')}/staged/{quote(quote_id, safe='')}/{int(index)}"
        f"?expires={expires}&token={token}"
    )
