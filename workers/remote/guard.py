"""The SSRF guard of every call to a microservice: resolve the host, refuse unsafe addresses,
connect only to the addresses checked (no re-resolution between check and connect)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)


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


def guarded_session(allow_loopback: bool = False) -> requests.Session:
    """A requests session that connects only to checked addresses, with no environment proxy."""
    session = requests.Session()
    session.trust_env = False  # never an environment proxy or .netrc credentials
    adapter = _GuardedAdapter(allow_loopback)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
