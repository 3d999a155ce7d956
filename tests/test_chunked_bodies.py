"""A request body sent with `Transfer-Encoding: chunked` (no Content-Length) is
read like any other, against the real ASGI server over a real socket: DRF takes a
request without a Content-Length for one without a body."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.dashboard.conftest import (
    DASHBOARD_REDIS_DB,
    LiveServer,
    redis_url_with_db,
)
from transactions.models import Transaction

pytestmark = pytest.mark.django_db(transaction=True)

PAYMENT = {"user_id": "ch", "amount": "5.00", "location": "Hyderabad"}


@pytest.fixture(scope="module")
def api_server(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    """Yield daphne serving the project on the test database; stop it after."""
    with django_db_blocker.unblock():
        database = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite" and not database.startswith("/"):
        pytest.skip("the live server needs the file-backed SQLite test database")
    server = LiveServer(
        database=database,
        redis_url=redis_url_with_db(redis_url, DASHBOARD_REDIS_DB),
        log_dir=tmp_path_factory.mktemp("daphne"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
def test_a_chunked_body_is_read_and_scored(api_server, token, path, expected):
    body = json.dumps(PAYMENT).encode()
    status, answer = _post(api_server, path, body, token, chunked=True)
    assert status == expected, answer
    assert answer["status"] in {"legit", "suspicious", "fraud"}
    assert 0 <= answer["risk_score"] <= 1
    stored = Transaction.objects.filter(user_id="ch").count()
    assert stored == (1 if path == "/api/predict" else 0)


def test_an_oversized_chunked_body_is_refused_as_with_a_content_length(
    api_server, token
):
    """Over DATA_UPLOAD_MAX_MEMORY_SIZE the chunked body gets the same 413 as one
    that declares its length, and nothing is scored."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the server's: the same settings
    body = json.dumps({**PAYMENT, "padding": "x" * (limit + 1000)}).encode()
    declared = _post(api_server, "/api/predict", body, token, chunked=False)
    chunked = _post(api_server, "/api/predict", body, token, chunked=True)
    assert declared[0] == 413, declared
    assert chunked == declared
    assert not Transaction.objects.exists()
