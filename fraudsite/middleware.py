"""Request errors answered the same with DEBUG on (as `make run` runs) as off, and
request bodies sent without a Content-Length given one."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    TooManyFieldsSent,
)
from django.http import HttpResponseBadRequest, JsonResponse


class RequestErrorsMiddleware:
    """Answer a query string Django refuses, or a Host not in ALLOWED_HOSTS,
    with a 400, and an unrouted /api/ path with JSON, whatever DEBUG says.

    With DEBUG off Django does all three already. With DEBUG on, its debug page
    for a query of over DATA_UPLOAD_MAX_NUMBER_FIELDS parameters reads the
    query again, fails again, and the server answers a bare 500; a foreign Host
    gets the debug page, with a traceback and the settings' names; and an
    unrouted /api/ path gets the HTML page listing every URL pattern instead of
    the API's JSON 404 (`fraudsite.urls.not_found`).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        api = request.path.startswith("/api/")
        try:
            # Checked and parsed here, where a refusal can be answered plainly.
            request.get_host()
            request.GET  # noqa: B018
        except (TooManyFieldsSent, RequestDataTooBig, DisallowedHost) as exc:
            if api:
                return JsonResponse({"detail": str(exc)}, status=400)
            return HttpResponseBadRequest(str(exc), content_type="text/plain")
        response = self.get_response(request)
        if (
            settings.DEBUG
            and api
            and response.status_code == 404
            and response.get("Content-Type", "").startswith("text/html")
        ):
            return JsonResponse({"detail": "Not found."}, status=404)
        return response


class ChunkedBodyLengthMiddleware:
    """Give a body sent with `Transfer-Encoding: chunked` its Content-Length.

    The ASGI server hands Django the whole body, but DRF reads a request without
    CONTENT_LENGTH as one without a body (an empty payload, a 400 "field is
    required"). Here such a body is read (Django's `request.body`, held to
    DATA_UPLOAD_MAX_MEMORY_SIZE) and its length set. A body over that limit is
    left unread and given a length just past it, so it is refused where any
    oversized body is: the API's parsers answer 413 before reading.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        if not meta.get("CONTENT_LENGTH") and "HTTP_TRANSFER_ENCODING" in meta:
            try:
                meta["CONTENT_LENGTH"] = str(len(request.body))
            except RequestDataTooBig:
                meta["CONTENT_LENGTH"] = str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
        return self.get_response(request)
