"""The API's exception handler: DRF's, with failed sign-ins counted by the
per-address throttle (see fraudsite.throttling).

Its own module: `fraudsite.throttling` is imported before DRF's views (by
django-axes, for the client address), and DRF's views import the throttle
classes named in the settings; importing DRF's views from there was circular.
"""

from __future__ import annotations

from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, Throttled
from rest_framework.views import exception_handler as drf_exception_handler

from fraudsite.throttling import AnonThrottle


def exception_handler(exc, context):
    """DRF's exception handler, but a call that fails authentication (a bad token,
    no credentials where they are needed) is first counted against the view's
    per-address anonymous limit: over it, the answer is DRF's 429 with
    Retry-After instead of the 401."""
    view, request = context.get("view"), context.get("request")
    if (
        isinstance(exc, NotAuthenticated | AuthenticationFailed)
        and view is not None
        and request is not None
        and not getattr(request, "_anon_throttle_counted", False)
    ):
        throttles = [t for t in view.get_throttles() if isinstance(t, AnonThrottle)]
        waits = [t.wait() for t in throttles if not t.allow_request(request, view)]
        if waits:
            exc = Throttled(max((w for w in waits if w is not None), default=None))
    return drf_exception_handler(exc, context)
