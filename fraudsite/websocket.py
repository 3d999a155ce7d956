"""Websocket origin check: the page must come from this very site, port included.

Channels' `AllowedHostsOriginValidator` compares only the Origin's host name with
ALLOWED_HOSTS. Browsers send a site's cookies to every port of its host, so a page
served from another port of the same host (http://localhost:3000, some other
local tool) could open the live feed with the analyst's session. This validator
applies Django's CSRF origin rule instead: the Origin must be the host the
request was made to (Host header, port included), or one of CSRF_TRUSTED_ORIGINS
(a site behind a proxy that rewrites Host). The scheme is not compared: behind a
TLS proxy the server sees ws:// for the browser's https:// page; two sites on
one host and port that differ only by scheme cannot both be served anyway.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.utils.http import is_same_domain

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_netloc(origin: str) -> str | None:
    """Return an Origin's host[:port], without the scheme's default port."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return host
    return f"{host}:{port}"


def _host_netloc(host: str) -> str:
    """Return a Host header's host[:port], without the default ports."""
    host = host.lower()
    for port in (":80", ":443"):
        if host.endswith(port):
            return host[: -len(port)]
    return host


def _trusted(origin: str) -> bool:
    """Return whether CSRF_TRUSTED_ORIGINS lists the origin, as Django reads it
    (an entry like https://*.example.com covers the subdomains)."""
    parts = urlsplit(origin.lower())
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        entry = entry.lower()
        if entry == origin.lower():
            return True
        if "*" in entry:
            pattern = urlsplit(entry)
            if pattern.scheme == parts.scheme and is_same_domain(
                parts.netloc, pattern.netloc.replace("*", "", 1)
            ):
                return True
    return False


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Return whether a websocket from `origin` may connect to `host`."""
    if not origin:
        return False
    if _trusted(origin):
        return True
    netloc = _origin_netloc(origin)
    return bool(netloc and host and netloc == _host_netloc(host))


class SameOriginValidator:
    """ASGI middleware: refuse websockets whose Origin is not this site."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin1")
        host = headers.get(b"host", b"").decode("latin1")
        if origin_allowed(origin, host):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
