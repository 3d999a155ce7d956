"""The API's exception handler: DRF's, with failed sign-ins counted by the
per-address throttle and refused calls of signed-in users by the per-user one
(see fraudsite.throttling).

Its own module: `fraudsite.throttling` is imported before DRF's views (by
django-axes, for the client address), and DRF's views import the throttle
classes named in the settings; importing DRF's views from there was circular.
"""

from __future__ import annotations

from rest_framework.exceptions import (
    AuthenticationFailed,
    NotAuthenticated,
    PermissionDenied,
    Throttled,
)
from rest_framework.views import exception_handler as drf_exception_handler

from fraudsite.throttling import AnonThrottle, PerUserThrottle, UserThrottle


def _throttled(view, request, kind: type, *, general=None) -> Throttled | None:
    """Count the request against the view's throttles of `kind` unless they ran
    already (`kind.counted_flag` is set on the request), and against `general`
    (a throttle class) when the view has none of that class; return the 429 to
    answer instead when it is over one of them, else None."""
    if getattr(request, kind.counted_flag, False):
        return None
    throttles = [t for t in view.get_throttles() if isinstance(t, kind)]
    if general is not None and not any(isinstance(t, general) for t in throttles):
        throttles.append(general())
    waits = [t.wait() for t in throttles if not t.allow_request(request, view)]
    if not waits:
        return None
    return Throttled(max((w for w in waits if w is not None), default=None))


def exception_handler(exc, context):
    """DRF's exception handler, but a call that fails authentication (a bad token,
    no credentials where they are needed) is first counted against the view's
    per-address anonymous limit: over it, the answer is DRF's 429 with
    Retry-After instead of the 401.

    Likewise a signed-in caller refused by a permission (a Scoring client's
    token reading the ledger, a Viewer editing a rule) is counted against its
    per-user limit: DRF checks permissions before throttles, so such 403s came
    back as fast as they were asked for. Against the general per-user limit
    too where the view has only its own (a Viewer posting to /api/predict,
    whose limit is off by default)."""
    view, request = context.get("view"), context.get("request")
    if view is None or request is None:
        return drf_exception_handler(exc, context)
    if isinstance(exc, NotAuthenticated | AuthenticationFailed):
        exc = _throttled(view, request, AnonThrottle) or exc
    elif isinstance(exc, PermissionDenied) and request.user.is_authenticated:
        exc = _throttled(view, request, PerUserThrottle, general=UserThrottle) or exc
    return drf_exception_handler(exc, context)
