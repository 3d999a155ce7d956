"""API request throttles: per signed-in user and per address for anonymous calls.

The counts live in the default cache (Redis, shared by every web process), so a
limit holds across workers. Throttling guards the database from a runaway script;
it must never be the thing that stops scoring: when the cache cannot be reached
the request is let through and the outage logged (at most once a minute).

DRF checks credentials and permissions before throttles, so a call with a bad
token, or none where one is needed, would get its 401 however often it came:
`fraudsite.exceptions.exception_handler` counts it against the per-address
limit first, and a signed-in caller's 403 against its per-user limit.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from rest_framework.throttling import (
    AnonRateThrottle,
    BaseThrottle,
    UserRateThrottle,
)

logger = logging.getLogger(__name__)

_LOG_EVERY_SECONDS = 60.0
_last_logged = 0.0


def client_address(request) -> str:
    """Return the client's address as DRF's throttles tell clients apart:
    REMOTE_ADDR, or behind NUM_PROXIES proxies the X-Forwarded-For entry the
    nearest of them added. The sign-in lockout (django-axes) uses it too: behind
    a TLS proxy every request has the proxy's REMOTE_ADDR, and one user's wrong
    passwords would lock that username for everyone."""
    return BaseThrottle().get_ident(request)


class _SettingsRateMixin:
    """Read the rate from settings.API_THROTTLE_RATES on each request.

    DRF reads its rates once, when the class is defined; reading them here lets
    an operator's setting (and a test's override) take effect. A rate of None or
    "" switches that throttle off.
    """

    def get_rate(self):
        return settings.API_THROTTLE_RATES.get(self.scope) or None

    def allow_request(self, request, view):
        global _last_logged
        try:
            return super().allow_request(request, view)
        except Exception:  # any cache/driver error: fail open, say so
            now = time.monotonic()
            if now - _last_logged >= _LOG_EVERY_SECONDS:
                _last_logged = now
                logger.exception("API throttle: cache unreachable, not throttling")
            return True


class PerUserThrottle(_SettingsRateMixin, UserRateThrottle):
    """A per-user limit; a signed-in caller's 403 counts against it
    (`fraudsite.exceptions.exception_handler`)."""

    # Set on a request once counted: not counted again on its 403.
    counted_flag = "_user_throttle_counted"

    def allow_request(self, request, view):
        setattr(request, self.counted_flag, True)
        return super().allow_request(request, view)


class UserThrottle(PerUserThrottle):
    """Requests per signed-in user (token or session), scope "user"."""


class AnonThrottle(_SettingsRateMixin, AnonRateThrottle):
    """Requests per client address without credentials, scope "anon"."""

    # Set on a request once counted: not counted again on its 401.
    counted_flag = "_anon_throttle_counted"

    def allow_request(self, request, view):
        setattr(request, self.counted_flag, True)
        return super().allow_request(request, view)


class PredictThrottle(PerUserThrottle):
    """POST /api/predict per signed-in user, scope "predict" (off by default: a
    gateway scoring its payments through one token must not be cut off by the
    general per-user limit; set API_THROTTLE_PREDICT_RATE to cap it)."""

    scope = "predict"
