"""Shared parts of the OpenAPI schema: error bodies, error responses, request bodies.

Every API view documents its operations with `api_operation` (drf-spectacular's
`extend_schema` plus the error responses the operation can answer with), so a
generated client knows each status it must handle and the body that comes with it:

- 400: `FieldErrors`, field name -> messages (`detail`, a string, for a body that
  could not be read or a refusal of the request as a whole);
- 401, 403, 404, 413, 429: `Error`, `{"detail": "..."}` (DRF's shape).

DRF checks credentials, then permissions, then request limits; a call that
fails its sign-in is counted against the per-address limit too, and over it is
a 429 (fraudsite.exceptions). Every operation may answer 400: an unknown
`?format=` (fraudsite.negotiation), or a query parameter it does not take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """An error about the request as a whole (DRF's shape)."""

    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer):
    """Refused input: each field named with its messages (documentation only)."""


class FieldErrorsExtension(OpenApiSerializerExtension):
    """Describe FieldErrors: a map whose keys are the request's own field names."""

    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema, direction):
        return {
            "type": "object",
            "description": (
                "Field name (or `non_field_errors`) -> the reasons it was refused; "
                "`detail`, a string, when the body could not be read (not JSON, "
                "too deeply nested, a file part) or the request is refused as a "
                "whole."
            ),
            "additionalProperties": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "string"},
                ]
            },
        }


ERROR_DESCRIPTIONS = {
    400: (
        "Refused input, each field named with its reasons (a body field, `format` "
        "or query parameter this does not take too)."
    ),
    401: (
        "No credentials, or ones that are not valid (an unknown token, an expired "
        "session); `WWW-Authenticate: Token` says how to sign in."
    ),
    403: (
        "Signed in, without the permission this needs: reading takes the Viewer, "
        "Analyst or Risk admin role, writing its own permission (or, signed in "
        "by session, without the CSRF token)."
    ),
    404: "No such object.",
    413: "Body over the upload limit (DATA_UPLOAD_MAX_MEMORY_SIZE).",
    429: (
        "Over the request limit (API_THROTTLE_*_RATE settings); Retry-After says "
        "in how many seconds to try again."
    ),
}

# What an operation for signed-in users may answer besides its own responses
# (400: a `format` or parameter it does not take; 403: reading takes a role
# that reads, which a Scoring client's token has not).
SIGNED_IN = (400, 401, 403, 429)
# ... and one that writes: also refused input, a body too large, no permission.
SIGNED_IN_WRITE = (400, 401, 403, 413, 429)

RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    description="Seconds until the request limit lets a request through again.",
    response=[429],
)

# Request bodies a client may send. Multipart (the browsable API's forms) is
# read too, but no endpoint takes a file (a file part is a 400): not offered.
REQUEST_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")


def request_body(serializer) -> dict:
    """Return `extend_schema(request=...)` for a body of JSON or a form."""
    return dict.fromkeys(REQUEST_MEDIA_TYPES, serializer)


def error_responses(
    codes: Iterable[int], descriptions: Mapping[int, str] | None = None
) -> dict[int, OpenApiResponse]:
    """Return the responses of these error statuses, each with its body."""
    descriptions = descriptions or {}
    return {
        code: OpenApiResponse(
            FieldErrorsSerializer if code == 400 else ErrorSerializer,
            description=descriptions.get(code) or ERROR_DESCRIPTIONS[code],
        )
        for code in sorted(codes)
    }


def api_operation(
    *,
    responses: Mapping,
    errors: Iterable[int] = SIGNED_IN,
    error_descriptions: Mapping[int, str] | None = None,
    parameters: Iterable = (),
    **kwargs,
):
    """Return `extend_schema` for an operation with `responses` and the error
    responses `errors` (statuses), described by ERROR_DESCRIPTIONS or, for one
    operation, `error_descriptions`; a 429 documents its Retry-After header."""
    errors = {*errors, *(error_descriptions or {})}
    parameters = [*parameters, *([RETRY_AFTER] if 429 in errors else [])]
    merged = dict(responses)
    for code, response in error_responses(errors, error_descriptions).items():
        # A response the operation describes itself (its own body) stays.
        merged.setdefault(code, response)
    return extend_schema(
        responses=merged,
        parameters=parameters or None,
        **kwargs,
    )
