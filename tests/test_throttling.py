"""API request limits: 429 with Retry-After per user and per address; the limits'
counts live in Redis (the real one), and an unreachable cache never blocks the API."""

import base64
import logging
import socket
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import AllowAny
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from tests.test_settings import settings_value

pytestmark = pytest.mark.django_db


def _cache(location: str) -> dict:
    """The default cache at `location` under a key prefix of this test alone."""
    cache = dict(settings.CACHES["default"])
    cache.update(LOCATION=location, KEY_PREFIX=f"throttle-test-{uuid.uuid4().hex}")
    return {"default": cache}


@pytest.fixture
def fresh_cache(redis_url):
    # The session's Redis: the machine's, or one started when none answers.
    with override_settings(CACHES=_cache(redis_url)):
        yield


def _client_for(django_user_model, name: str) -> APIClient:
    """Return a client signed in as a new user who may read the ledger."""
    user = django_user_model.objects.create_user(username=name)
    user.user_permissions.add(Permission.objects.get(codename="view_transaction"))
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_user_over_the_limit_gets_429_with_retry_after_and_others_do_not(
    fresh_cache, django_user_model
):
    busy = _client_for(django_user_model, "busy")
    other = _client_for(django_user_model, "other")
    with override_settings(API_THROTTLE_RATES={"user": "3/min", "anon": None}):
        codes = [busy.get("/api/transactions").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = busy.get("/api/transactions")
        assert refused.status_code == 429
        assert 0 < int(refused["Retry-After"]) <= 60
        assert "throttled" in refused.json()["detail"].lower()
        assert other.get("/api/transactions").status_code == 200


def test_calls_without_credentials_are_limited_per_address(fresh_cache):
    client = APIClient()
    with override_settings(API_THROTTLE_RATES={"user": None, "anon": "2/min"}):
        codes = [client.get("/api/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_calls_that_fail_authentication_are_limited_per_address(
    fresh_cache, staff_user
):
    """DRF refuses bad credentials before its throttles run; they count against
    the per-address limit all the same (a bad token, a Basic header, none), with
    calls that need none: over it, 429 with Retry-After instead of 401. A good
    token from that address is not held to it."""
    basic = base64.b64encode(b"analyst:wrong-password").decode()
    good = APIClient()
    good.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user)}"
    )

    def call(path: str, authorization: str | None = None):
        client = APIClient()
        if authorization:
            client.credentials(HTTP_AUTHORIZATION=authorization)
        if path == "/api/predict":
            return client.post(path, {"user_id": "u", "amount": "5"}, format="json")
        return client.get(path)

    with override_settings(API_THROTTLE_RATES={"user": None, "anon": "4/min"}):
        codes = [
            call("/api/").status_code,
            call("/api/transactions", "Token deadbeef1").status_code,
            call("/api/transactions", f"Basic {basic}").status_code,
            call("/api/predict").status_code,
        ]
        assert codes == [200, 401, 401, 401]
        for response in (
            call("/api/transactions", "Token deadbeef2"),
            call("/api/predict", "Token deadbeef3"),
            call("/api/transactions"),
        ):
            assert response.status_code == 429, response.content
            assert 0 < int(response["Retry-After"]) <= 60
        assert good.get("/api/transactions").status_code == 200
        predicted = good.post(
            "/api/predict", {"user_id": "u", "amount": "5"}, format="json"
        )
        assert predicted.status_code == 201, predicted.content


def test_refused_calls_of_a_signed_in_user_count_against_its_limit(
    fresh_cache, django_user_model
):
    """DRF checks permissions before throttles: a Scoring client's token (it
    records payments, reads nothing) asking for the ledger got its 403 however
    often it asked. It counts against the per-user limit: over it, 429."""
    from django.contrib.auth.models import Group

    from detection.roles import ROLE_SCORING_CLIENT, ROLE_VIEWER

    gateway = django_user_model.objects.create_user(username="gateway")
    gateway.groups.add(Group.objects.get(name=ROLE_SCORING_CLIENT))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=gateway)}")
    other = _client_for(django_user_model, "reader")
    with override_settings(API_THROTTLE_RATES={"user": "3/min", "anon": None}):
        codes = [client.get("/api/transactions").status_code for _ in range(4)]
        assert codes == [403, 403, 403, 429]
        assert 0 < int(client.get("/api/rules")["Retry-After"]) <= 60
        assert other.get("/api/transactions").status_code == 200
    # POST /api/predict has its own limit (off): a Viewer's refused calls
    # count against the general one all the same.
    viewer = django_user_model.objects.create_user(username="viewer-predicts")
    viewer.groups.add(Group.objects.get(name=ROLE_VIEWER))
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer)}")
    payload = {"user_id": "u", "amount": "5.00"}
    with override_settings(
        API_THROTTLE_RATES={"user": "2/min", "anon": None, "predict": None}
    ):
        codes = [
            client.post("/api/predict", payload, format="json").status_code
            for _ in range(3)
        ]
    assert codes == [403, 403, 429]


class _RefusesAfterThrottles(APIView):
    """Lets anyone past its checks (throttles included), then answers 401."""

    permission_classes = [AllowAny]

    def get(self, request):
        raise NotAuthenticated


def test_a_401_after_the_throttles_ran_is_counted_once(fresh_cache):
    view = _RefusesAfterThrottles.as_view()
    factory = APIRequestFactory()
    with override_settings(API_THROTTLE_RATES={"user": None, "anon": "2/min"}):
        codes = [view(factory.get("/refuses")).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_a_forwarded_for_header_does_not_make_a_new_client(fresh_cache):
    """Without proxies (NUM_PROXIES=0) the address is REMOTE_ADDR: a client that
    sends a new X-Forwarded-For each time is still one client."""
    client = APIClient()
    with override_settings(API_THROTTLE_RATES={"user": None, "anon": "2/min"}):
        codes = [
            client.get("/api/", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code
            for n in range(3)
        ]
    assert codes == [200, 200, 429]


def test_predict_has_its_own_limit_off_by_default(fresh_cache, staff_user):
    """A gateway scoring payments through one token is not cut off by the general
    per-user limit; API_THROTTLE_PREDICT_RATE caps /api/predict when set."""
    client = APIClient()
    client.force_authenticate(staff_user)

    def predict(n: int) -> int:
        payload = {"transaction_id": f"p-{n}", "user_id": "gw", "amount": "5.00"}
        return client.post("/api/predict", payload, format="json").status_code

    with override_settings(API_THROTTLE_RATES={"user": "2/min", "predict": None}):
        assert [predict(n) for n in range(4)] == [201] * 4
        assert client.get("/api/transactions").status_code == 200
        assert client.get("/api/transactions").status_code == 200
        assert client.get("/api/transactions").status_code == 429
    with override_settings(API_THROTTLE_RATES={"user": None, "predict": "2/min"}):
        assert [predict(n) for n in range(10, 13)] == [201, 201, 429]


def test_no_rate_means_no_limit(fresh_cache, django_user_model):
    client = _client_for(django_user_model, "unlimited")
    with override_settings(API_THROTTLE_RATES={"user": "", "anon": ""}):
        codes = {client.get("/api/transactions").status_code for _ in range(30)}
    assert codes == {200}


def test_an_unreachable_cache_lets_requests_through_and_says_so(
    django_user_model, caplog
):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = _client_for(django_user_model, "during-outage")
    with (
        override_settings(
            CACHES=_cache(f"redis://127.0.0.1:{port}/0"),
            API_THROTTLE_RATES={"user": "1/min", "anon": None},
        ),
        caplog.at_level(logging.ERROR, logger="fraudsite.throttling"),
    ):
        codes = [client.get("/api/transactions").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert any("cache unreachable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("rate", ["100", "ten/s", "5/fortnight", "5 / s"])
def test_a_malformed_rate_stops_startup_with_its_name(rate):
    result = settings_value(
        "s.API_THROTTLE_RATES", DEBUG="1", API_THROTTLE_USER_RATE=rate
    )
    assert result.returncode != 0
    assert "API_THROTTLE_USER_RATE must look like" in result.stderr


def test_rates_are_read_from_the_environment():
    result = settings_value(
        "s.API_THROTTLE_RATES", DEBUG="1", API_THROTTLE_USER_RATE="5000/hour"
    )
    assert result.stdout.strip() == (
        "{'user': '5000/hour', 'anon': '20/s', 'predict': None}"
    )


def test_the_throttles_import_before_drf_views():
    """django-axes imports fraudsite.throttling (the client address) before any
    DRF view, as a sign-in does in a fresh process (`make bench`'s
    bench_dashboard): that import must not need DRF's views, whose import reads
    the throttle classes from this module."""
    import os
    import subprocess
    import sys

    script = (
        "import django; django.setup(); import fraudsite.throttling; "
        "from rest_framework.views import APIView; print(APIView.throttle_classes)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "fraudsite.settings",
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "UserThrottle" in result.stdout
