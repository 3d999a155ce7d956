"""A request body sent with `Transfer-Encoding: chunked` (no Content-Length) is
read like any other, against the real ASGI server over a real socket (the
dashboard's live daphne): DRF takes a request without a Content-Length for one
without a body."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from transactions.models import Transaction

pytestmark = pytest.mark.django_db(transaction=True)

PAYMENT = {"user_id": "ch", "amount": "5.00", "location": "Hyderabad"}


@pytest.fixture
def token(staff_user) -> str:
    return Token.objects.create(user=staff_user).key


def _chunks(body: bytes, size: int = 7) -> Iterator[bytes]:
    """Yield the body in pieces, so it crosses the wire as several chunks."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _post(server, path: str, body: bytes, token: str, *, chunked: bool):
    """POST `body` as JSON, chunked (no Content-Length) or with a Content-Length;
    return the status and the parsed JSON answer."""
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
            conn.request(
                "POST",
                path,
                body=_chunks(body, size=7 if len(body) < 1000 else 65536),
                headers=headers,
                encode_chunked=True,
            )
        else:
            conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/predict", 201), ("/api/validate-transaction", 200)],
)
def test_a_chunked_body_is_read_and_scored(live_server_asgi, token, path, expected):
    body = json.dumps(PAYMENT).encode()
    status, answer = _post(live_server_asgi, path, body, token, chunked=True)
    assert status == expected, answer
    assert answer["status"] in {"legit", "suspicious", "fraud"}
    assert 0 <= answer["risk_score"] <= 1
    stored = Transaction.objects.filter(user_id="ch").count()
    assert stored == (1 if path == "/api/predict" else 0)


def test_an_oversized_chunked_body_is_refused_as_with_a_content_length(
    live_server_asgi, token
):
    """Over DATA_UPLOAD_MAX_MEMORY_SIZE the chunked body gets the same 413 as one
    that declares its length, and nothing is scored."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the server's: the same settings
    body = json.dumps({**PAYMENT, "padding": "x" * (limit + 1000)}).encode()
    declared = _post(live_server_asgi, "/api/predict", body, token, chunked=False)
    chunked = _post(live_server_asgi, "/api/predict", body, token, chunked=True)
    assert declared[0] == 413, declared
    assert chunked == declared
    assert not Transaction.objects.exists()
