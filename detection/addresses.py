"""Where alert webhooks may not POST: cloud metadata services.

A webhook there would send alerts, and the admin's test event would probe, where
an instance's credentials live. Private and loopback addresses stay allowed: a
risk team's case system is often on its own network. Checked when a webhook is
saved (its URL's host as written), before every POST (each address the host
resolves to, for a clear refusal without connecting), and on every connection the
POST opens: the address the socket actually reached is checked before a byte is
sent (`webhook_session`), so a name that changes its answer between that lookup
and the connection (DNS rebinding) is caught too.
"""

from __future__ import annotations

import ipaddress
import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# Metadata services outside the link-local ranges, and names that reach them.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("fd00:ec2::254"),  # AWS, over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Return True if `address` is a metadata service's (link-local included),
    also when written as IPv4-mapped or NAT64 IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_forbidden(embedded)
    return address.is_link_local or address in METADATA_ADDRESSES


def host_refusal(host: str) -> str:
    """Return why a URL's host (as written) may not be POSTed to, or ""."""
    name = host.strip().lower().rstrip(".").strip("[]")
    if name in METADATA_NAMES:
        return f"{host} is a link-local or cloud metadata address."
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return ""
    if address_forbidden(address):
        return f"{host} is a link-local or cloud metadata address."
    return ""


def _reached_refusal(host: str, sockaddr: tuple) -> str:
    """Return why `host`, found at a socket address (getaddrinfo's, or a
    socket's peer), may not be POSTed to, or ""."""
    try:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
    except ValueError:
        return ""
    if address_forbidden(address):
        return f"{host} resolves to {address}, a link-local or metadata address."
    return ""


def resolved_refusal(host: str, port: int) -> str:
    """Return why `host` may not be POSTed to, counting every address it
    resolves to, or "" (a name that does not resolve is left to the POST)."""
    refusal = host_refusal(host)
    if refusal:
        return refusal
    try:
        answers = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ""
    return next(
        (r for *_rest, sockaddr in answers if (r := _reached_refusal(host, sockaddr))),
        "",
    )


class AddressRefused(Exception):
    """A webhook connection reached a forbidden address; str() says which.

    Not an OSError, so that urllib3 neither retries nor wraps it: the POST
    fails at once with this reason (the pool closes the socket)."""


def peer_refusal(host: str, sock: socket.socket) -> str:
    """Return why a connected socket's peer may not be POSTed to, or ""."""
    return _reached_refusal(host, sock.getpeername())


class _CheckedPeer:
    """Check the address each new connection reached, before TLS or a request.

    Checking the socket, not a DNS answer read beforehand, leaves no window for a
    name that answers differently the second time. Through a proxy (HTTPS_PROXY)
    the peer is the proxy, and the proxy's own egress rules apply.
    """

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        refusal = peer_refusal(self.host, sock)  # type: ignore[attr-defined]
        if refusal:
            sock.close()
            raise AddressRefused(refusal)
        return sock


class _CheckedHTTPConnection(_CheckedPeer, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedPeer, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }


def webhook_session() -> requests.Session:
    """Return an HTTP session whose connections refuse metadata addresses
    (raising AddressRefused), however the host's name resolved."""
    session = requests.Session()
    adapter = _CheckedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
