"""API body parsers that refuse oversized and pathological bodies with a 4xx.

DRF's JSON and form parsers read the whole body into memory whatever its size
(Django's DATA_UPLOAD_MAX_MEMORY_SIZE only guards `request.POST` and `body`), and
a deeply nested JSON document overflows the parser's recursion (a 500). Every API
payload here is a small object, so bodies are held to Django's own upload limit.
Django's multipart parser applies that limit to fields only, not to file parts
(streamed to temporary files of any size), and no endpoint takes a file: multipart
bodies are held to the limit by their Content-Length, and file parts are a 400.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser


class RequestBodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


def _too_large() -> RequestBodyTooLarge:
    return RequestBodyTooLarge(
        f"Request body larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes "
        "(DATA_UPLOAD_MAX_MEMORY_SIZE)."
    )


def _declared_length_check(parser_context: dict | None) -> None:
    """Refuse, before reading, a body whose Content-Length is over the limit."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    meta = getattr((parser_context or {}).get("request"), "META", {})
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if limit is not None and declared > limit:
        raise _too_large()


def _body_bounded(stream, parser_context: dict | None) -> io.BytesIO:
    """Return the body as a stream, or raise RequestBodyTooLarge past the limit.

    A declared Content-Length over the limit is refused before reading; a body
    without one (chunked) is read only up to one byte past the limit.
    """
    _declared_length_check(parser_context)
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(body) > limit:
        raise _too_large()
    return io.BytesIO(body)


class BoundedJSONParser(JSONParser):
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE; too deep a nesting is a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Return the parsed body (413 when too large, 400 when too deep)."""
        body = _body_bounded(stream, parser_context)
        try:
            return super().parse(body, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc


class BoundedFormParser(FormParser):
    """URL-encoded form bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Return the parsed form (413 when too large)."""
        body = _body_bounded(stream, parser_context)
        try:
            return super().parse(body, media_type, parser_context)
        except SuspiciousOperation as exc:
            # Over DATA_UPLOAD_MAX_NUMBER_FIELDS: a JSON 400, not Django's page.
            raise ParseError(str(exc)) from exc


class BoundedMultiPartParser(MultiPartParser):
    """Multipart form bodies (the browsable API's forms) up to the limit, no files."""

    def parse(self, stream, media_type=None, parser_context=None):
        """Return the parsed form (413 when too large, 400 with a file part)."""
        _declared_length_check(parser_context)
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except SuspiciousOperation as exc:
            raise ParseError(str(exc)) from exc
        if parsed.files:
            raise ParseError(
                "File uploads are not accepted here; send the fields as JSON "
                f"(file parts: {', '.join(sorted(parsed.files))})."
            )
        return parsed
