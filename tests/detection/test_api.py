"""Scoring endpoints: health, predict (idempotent), validate (what-if), bad input."""

import io
import json
from decimal import Decimal

import pytest

from detection.models import UserProfile
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

GOOD = {
    "transaction_id": "tx-1",
    "user_id": "1087",
    "amount": "42.50",
    "timestamp": "2026-03-01T10:00:00Z",
    "location": "Hyderabad",
    "channel": "pos",
}


def test_health_needs_no_login_and_reports_model(anon_client):
    """GET /api/ answers without a login, with the DB state and model version."""
    response = anon_client.get("/api/")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
    assert response.json()["model_version"] is None
    assert response.json()["scoring"] == "rules only"


def test_schema_is_served_without_login(anon_client):
    """The OpenAPI 3 schema lists the predict and validate endpoints."""
    response = anon_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    text = response.content.decode()
    assert "/api/predict" in text and "/api/validate-transaction" in text
    paths = response.json()["paths"]
    assert {"200", "201", "400", "403", "409"} <= set(
        paths["/api/predict/"]["post"]["responses"]
    )
    assert "400" in paths["/api/validate-transaction/"]["post"]["responses"]
    assert "400" in paths["/api/transactions/"]["get"]["responses"]

    def parameters(path, method):
        return {p["name"] for p in paths[path][method].get("parameters", [])}

    # The page size belongs to the list alone, with its real default.
    assert "n" in parameters("/api/transactions/", "get")
    assert "n" not in parameters("/api/transactions/{transaction_id}/", "get")
    assert "n" not in parameters("/api/transactions/{transaction_id}/label/", "post")
    (n,) = [
        p for p in paths["/api/transactions/"]["get"]["parameters"] if p["name"] == "n"
    ]
    assert "default 20" in n["description"]
    amount = response.json()["components"]["schemas"]["TransactionMessage"][
        "properties"
    ]["amount"]
    (number,) = [kind for kind in amount["oneOf"] if kind["type"] == "number"]
    assert number["minimum"] == 0.001  # 1 fils (KWD)


@pytest.mark.parametrize(
    "path", ["/api/predict", "/api/validate-transaction", "/api/transactions"]
)
def test_endpoints_need_login(anon_client, path):
    """Everything but health and schema refuses anonymous callers with a 401
    that says how to authenticate; a bad token is a 401 too."""
    response = (
        anon_client.get(path)
        if path.endswith("transactions")
        else anon_client.post(path, GOOD, format="json")
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    anon_client.credentials(HTTP_AUTHORIZATION="Token bogus")
    assert anon_client.get("/api/transactions").status_code == 401


@pytest.mark.parametrize("path", ["/api/predict", "/api/predict/"])
def test_predict_scores_records_and_returns_verdict_at_top_level(api_client, path):
    """Predict stores the transaction and returns the verdict's fields at top level."""
    response = api_client.post(path, GOOD, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["transaction_id"] == "tx-1"
    assert body["status"] == "legit"
    assert 0 <= body["risk_score"] <= 1
    assert body["reasons"] == []
    assert body["model_version"] == ""
    assert Transaction.objects.filter(transaction_id="tx-1").count() == 1
    assert UserProfile.objects.get(user_id="1087").txn_count == 1


def test_predict_is_idempotent(api_client):
    """Posting the same payment again returns the stored verdict, 200, once (a
    retry may leave the time out or stamp it anew)."""
    first = api_client.post("/api/predict", GOOD, format="json")
    again = api_client.post(
        "/api/predict", {**GOOD, "timestamp": "2026-03-01T10:00:00Z"}, format="json"
    )
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["risk_score"] == first.json()["risk_score"]
    assert Transaction.objects.count() == 1
    assert UserProfile.objects.get(user_id="1087").txn_count == 1


@pytest.mark.parametrize(
    "change", [{"amount": "99999.00"}, {"user_id": "someone-else"}, {"currency": "EUR"}]
)
def test_an_id_reused_for_another_payment_is_a_409(api_client, change):
    """The same transaction_id for another card, amount or currency is not the
    stored payment: a 409 naming what differs, never the stored verdict as if
    this one had been scored; nothing changes."""
    api_client.post("/api/predict", GOOD, format="json")
    response = api_client.post("/api/predict", {**GOOD, **change}, format="json")
    assert response.status_code == 409
    (error,) = response.json()["transaction_id"]
    (field,) = change
    assert f"this one: {field} {change[field]}" in error
    if field == "amount":
        # The stored amount with its currency's decimals, not the column's 3.
        assert "(amount 42.50;" in error
    assert Transaction.objects.get().amount == Decimal("42.50")
    assert UserProfile.objects.filter(user_id="someone-else").count() == 0


def test_predict_that_loses_a_race_for_its_id_returns_the_stored_verdict(
    api_client, monkeypatch
):
    """Given another writer storing the same id between predict's check and its
    insert, predict answers 200 with the stored verdict (not 500) and changes no
    user state."""
    first = api_client.post("/api/predict", GOOD, format="json")
    profile = UserProfile.objects.values().get(user_id=GOOD["user_id"])
    # Both checks see nothing, as if the other writer had not committed yet: the
    # insert then hits the unique constraint.
    monkeypatch.setattr("detection.views.transaction_get", _found_only_later())
    monkeypatch.setattr(
        "detection.services.recording.transaction_ids_existing",
        lambda *, transaction_ids: set(),
    )
    response = api_client.post("/api/predict", GOOD, format="json")
    assert response.status_code == 200
    assert response.json()["risk_score"] == first.json()["risk_score"]
    assert UserProfile.objects.values().get(user_id=GOOD["user_id"]) == profile
    stored = Transaction.objects.filter(transaction_id=GOOD["transaction_id"])
    assert stored.count() == 1


def _found_only_later():
    from transactions.selectors import transaction_get

    calls = []

    def lookup(*, transaction_id):
        calls.append(transaction_id)
        if len(calls) == 1:
            return None
        return transaction_get(transaction_id=transaction_id)

    return lookup


def test_predict_generates_an_id_when_absent(api_client):
    """The API may generate the transaction_id: when it is left out, or empty
    (the browsable API's form posts its empty fields as "")."""
    payload = {k: v for k, v in GOOD.items() if k != "transaction_id"}
    response = api_client.post("/api/predict", payload, format="json")
    assert response.status_code == 201
    assert response.json()["transaction_id"].startswith("api-")
    empty = {**payload, "transaction_id": ""}
    response = api_client.post("/api/predict", empty, format="json")
    assert response.status_code == 201
    assert response.json()["transaction_id"].startswith("api-")


def test_predict_explains_impossible_travel(api_client):
    """London then Sydney an hour later fires geo_velocity with its values."""
    api_client.post(
        "/api/predict",
        {**GOOD, "transaction_id": "a", "location": "London"},
        format="json",
    )
    response = api_client.post(
        "/api/predict",
        {
            **GOOD,
            "transaction_id": "b",
            "location": "Sydney",
            "timestamp": "2026-03-01T11:00:00Z",
        },
        format="json",
    )
    reasons = {r["code"]: r for r in response.json()["reasons"]}
    assert "geo_velocity" in reasons
    assert reasons["geo_velocity"]["values"]["distance_km"] > 15000
    assert "km/h" in reasons["geo_velocity"]["detail"]


BAD_PAYLOADS = [
    ({"amount": "10"}, "user_id"),
    ({"user_id": "u"}, "amount"),
    ({"user_id": "u", "amount": 0}, "amount"),
    ({"user_id": "u", "amount": -5}, "amount"),
    ({"user_id": "u", "amount": "NaN"}, "amount"),
    ({"user_id": "u", "amount": "Infinity"}, "amount"),
    ({"user_id": "u", "amount": "1e400"}, "amount"),
    ({"user_id": "u", "amount": "10.001"}, "amount"),
    ({"user_id": "u", "amount": "abc"}, "amount"),
    ({"user_id": "u", "amount": True}, "amount"),
    ({"user_id": "u", "amount": [1]}, "amount"),
    ({"user_id": "u", "amount": 5, "latitude": 91, "longitude": 0}, "latitude"),
    ({"user_id": "u", "amount": 5, "latitude": 0, "longitude": -181}, "longitude"),
    ({"user_id": "u", "amount": 5, "latitude": 10}, "latitude"),
    ({"user_id": "u", "amount": 5, "timestamp": "yesterday"}, "timestamp"),
    ({"user_id": "u" * 65, "amount": 5}, "user_id"),
    ({"user_id": "u", "amount": 5, "transaction_id": "t" * 65}, "transaction_id"),
    ({"user_id": "u", "amount": 5, "location": "x" * 129}, "location"),
    ({"user_id": {"a": 1}, "amount": 5}, "user_id"),
    ({"user_id": "u\x00v", "amount": 5}, "user_id"),
    ({"user_id": "u", "amount": 5, "channel": "fax"}, "channel"),
    ({"user_id": "u", "amount": 5, "currency": "dollars"}, "currency"),
    ({"user_id": "u", "amount": 5, "country": "GBR"}, "country"),
    ({"user_id": "u", "amount": 5, "latitude": 10**400, "longitude": 0}, "latitude"),
    ({"user_id": "u", "amount": 5, "merchant_id": "m\ud800"}, "merchant_id"),
    ({"user_id": "u\udfff", "amount": 5}, "user_id"),
    ({"user_id": "u", "amount": 5, "transaction_id": "2026/11/29-1"}, "transaction_id"),
    ({"user_id": "a/b", "amount": 5}, "user_id"),
    ({"user_id": "u", "amount": 5, "transaction_id": ".."}, "transaction_id"),
    # Spaces are no id (the API would make one up, and a retry store twice).
    ({"user_id": "u", "amount": 5, "transaction_id": "   "}, "transaction_id"),
    ({"user_id": " ", "amount": 5}, "user_id"),
    ({"user_id": ".", "amount": 5}, "user_id"),
    # Control and bidirectional-text characters: split log lines, spoofed ids.
    ({"user_id": "u\nv", "amount": 5}, "user_id"),
    ({"user_id": "u", "amount": 5, "transaction_id": "t\tx"}, "transaction_id"),
    ({"user_id": "card-\u202eevil", "amount": 5}, "user_id"),
    ({"user_id": "u", "amount": 5, "merchant_id": "shop\r\n1"}, "merchant_id"),
    # Placeholders and typos: .NET's DateTime.MaxValue, the epoch, year 10000.
    (
        {"user_id": "u", "amount": 5, "timestamp": "9999-12-31T23:59:59.9999999Z"},
        "timestamp",
    ),
    ({"user_id": "u", "amount": 5, "timestamp": 0}, "timestamp"),
    ({"user_id": "u", "amount": 5, "timestamp": "1970-01-01T00:00:00Z"}, "timestamp"),
    ({"user_id": "u", "amount": 5, "timestamp": 253402300800}, "timestamp"),
    # Decimal() alone takes these; an amount is ASCII digits and one '.'.
    ({"user_id": "u", "amount": "1_000"}, "amount"),
    ({"user_id": "u", "amount": "\uff11\uff12"}, "amount"),
    ({"user_id": "u", "amount": "1e3"}, "amount"),
    ({"user_id": "u", "amount": 0.30000000000000004}, "amount"),
    ({"user_id": "u", "amount": "1000000000000.01"}, "amount"),
]


@pytest.mark.parametrize("path", ["/api/predict", "/api/validate-transaction"])
@pytest.mark.parametrize(("payload", "field"), BAD_PAYLOADS)
def test_bad_payloads_get_400_with_field_errors(api_client, path, payload, field):
    """Each malformed payload gets a 400 naming the bad field; nothing is stored."""
    # json.dumps escapes lone surrogates as a client would send them (\\ud800).
    body = json.dumps(payload)
    response = api_client.post(path, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Transaction.objects.count() == 0


@pytest.mark.parametrize(
    ("amount", "stored"),
    [
        ("12.500", "12.50"),
        (12.5, "12.50"),
        ("+7", "7.00"),
        (".5", "0.50"),
        (1e-2, "0.01"),
        # Large in a currency of small units (2e9 IDR is about 120,000 USD).
        ("2000000000", "2000000000.00"),
        ("999999999999.99", "999999999999.99"),
        (1e12, "1000000000000.00"),
    ],
)
def test_amounts_with_trailing_zeros_or_float_spelling_are_accepted(
    api_client, amount, stored
):
    """12.500 is a whole number of cents, as are 12.5 and 0.01 sent as JSON floats."""
    response = api_client.post(
        "/api/predict", {"user_id": "u", "amount": amount}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["amount"] == stored
    # As stored, exactly (the column keeps 3 decimals: 12.500).
    assert Transaction.objects.get().amount == Decimal(stored)


@pytest.fixture
def rates_of_fils_and_units_of_account():
    """An exchange rate for CLF (ISO 4217 gives it 4 decimals), which the
    seeded rates do not have; KWD's (3 decimals) is seeded (detection 0024)."""
    from detection.models import ExchangeRate

    ExchangeRate.objects.create(currency="CLF", units_per_base=0.025)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        ("12.345", "KWD", "12.345"),
        (12.345, "KWD", "12.345"),
        ("999999999999.999", "KWD", "999999999999.999"),
        ("100.00", "JPY", "100"),
        ("1000000000000", "JPY", "1000000000000"),
        ("12.50", "USD", "12.50"),
        ("1.234", "CLF", "1.234"),
    ],
)
def test_amounts_are_taken_stored_and_shown_in_their_currency_minor_unit(
    api_client, rates_of_fils_and_units_of_account, amount, currency, shown
):
    """12.345 KWD (fils) is a payment, stored exactly and shown as sent; 100.00
    JPY is 100 yen, shown without decimals; USD keeps its cents ("12.50", not
    the column's "12.500"), in predict's answer and when read back."""
    payload = {"user_id": "u", "amount": amount, "currency": currency}
    response = api_client.post("/api/predict", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["amount"] == shown
    stored = Transaction.objects.get()
    assert stored.amount == Decimal(shown)
    again = api_client.get(f"/api/transactions/{stored.transaction_id}")
    assert again.json()["amount"] == shown


def test_the_what_if_history_shows_amounts_with_their_currency_decimals(api_client):
    """The what-if's recent transactions show 100 JPY and 12.50 USD, not the
    ledger column's 100.000 and 12.500."""
    for tid, amount, currency in (("t-usd", "12.50", "USD"), ("t-jpy", "100", "JPY")):
        payment = {"transaction_id": tid, "user_id": "u", "amount": amount}
        response = api_client.post(
            "/api/predict", {**payment, "currency": currency}, format="json"
        )
        assert response.status_code == 201
    response = api_client.post(
        "/api/validate-transaction", {"user_id": "u", "amount": "5"}, format="json"
    )
    recent = response.json()["history"]["recent_transactions"]
    assert {(r["amount"], r["currency"]) for r in recent} == {
        ("12.50", "USD"),
        ("100", "JPY"),
    }


@pytest.mark.parametrize(
    ("amount", "currency", "error"),
    [
        ("100.5", "JPY", "JPY amounts have no decimal places."),
        (100.5, "JPY", "JPY amounts have no decimal places."),
        ("12.345", "USD", "USD amounts have at most 2 decimal places."),
        ("12.3451", "KWD", "KWD amounts have at most 3 decimal places."),
        (
            "1.2345",
            "CLF",
            "CLF amounts have at most 3 decimal places here (ISO 4217 gives it "
            "4; the ledger keeps 3).",
        ),
    ],
)
@pytest.mark.parametrize("path", ["/api/predict", "/api/validate-transaction"])
def test_more_decimals_than_the_currency_has_is_a_400_naming_it(
    api_client, rates_of_fils_and_units_of_account, path, amount, currency, error
):
    """A yen has no fractions, a dollar 2 decimals, a dinar 3: more is a 400
    whose amount error names the currency and its decimals; nothing stored."""
    payload = {"user_id": "u", "amount": amount, "currency": currency}
    response = api_client.post(path, payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {"amount": [error]}
    assert Transaction.objects.count() == 0


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "{not json", '{"amount": NaN}'])
def test_non_object_json_gets_400(api_client, body):
    """A body that is not a JSON object (or not JSON) is a 400, never a 500."""
    response = api_client.post("/api/predict", body, content_type="application/json")
    assert response.status_code == 400


def test_validate_is_a_what_if_that_changes_nothing(api_client):
    """Validate scores against history with context, storing nothing."""
    for index, minute in enumerate(range(0, 50, 10)):
        api_client.post(
            "/api/predict",
            {
                **GOOD,
                "transaction_id": f"h{index}",
                "timestamp": f"2026-03-01T10:{minute:02d}:00Z",
            },
            format="json",
        )
    profile_before = UserProfile.objects.get(user_id="1087")
    count_before = Transaction.objects.count()
    response = api_client.post(
        "/api/validate-transaction",
        {
            "user_id": "1087",
            "amount": 1500,
            "location": "Hyderabad",
            "timestamp": "2026-03-01T11:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["risk_score"] >= 0.45
    assert "amount_spike" in [r["code"] for r in body["reasons"]]
    assert body["history"]["transaction_count"] == 5
    assert body["history"]["typical_amount"] == pytest.approx(42.5)
    assert body["history"]["last_location"] == "Hyderabad"
    assert body["history"]["count_1h"] == 5
    assert len(body["history"]["recent_transactions"]) == 5
    assert Transaction.objects.count() == count_before
    profile_after = UserProfile.objects.get(user_id="1087")
    assert profile_after.txn_count == profile_before.txn_count
    assert profile_after.recent == profile_before.recent
    assert profile_after.updated_at == profile_before.updated_at


def test_validate_for_an_unknown_user_has_empty_history(api_client):
    """A user with no history gets a verdict and an empty context."""
    response = api_client.post(
        "/api/validate-transaction", {"user_id": "new", "amount": 10}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["history"]["transaction_count"] == 0
    assert not UserProfile.objects.filter(user_id="new").exists()


def test_predict_pushes_the_verdict_to_the_live_dashboard(
    api_client, settings, redis_url
):
    """A transaction scored by the API reaches the dashboard group over Redis."""
    import asyncio
    import os

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-api-{os.getpid()}"},
        }
    }
    layer = get_channel_layer()

    async def subscribe_then_receive():
        channel = await layer.new_channel()
        await layer.group_add("verdicts", channel)
        return channel

    channel = async_to_sync(subscribe_then_receive)()
    response = api_client.post("/api/predict", GOOD, format="json")
    assert response.status_code == 201

    async def receive_until_tx_1():
        # Earlier tests' predictions may share the group; wait for ours.
        while True:
            event = await asyncio.wait_for(layer.receive(channel), timeout=10)
            ids = [verdict["transaction_id"] for verdict in event["verdicts"]]
            if "tx-1" in ids:
                return event

    event = async_to_sync(receive_until_tx_1)()
    assert event["type"] == "verdicts.batch"
    assert event["counts"]["total"] >= 1


def test_a_transaction_dated_too_far_ahead_is_400_when_limited(api_client, settings):
    """With TRANSACTION_MAX_FUTURE_SECONDS set, predict refuses a far-future
    timestamp with a field error and stores nothing."""
    settings.TRANSACTION_MAX_FUTURE_SECONDS = 86400
    payload = {**GOOD, "timestamp": "2099-01-01T00:00:00Z"}
    response = api_client.post("/api/predict", payload, format="json")
    assert response.status_code == 400
    assert "timestamp" in response.json()
    assert Transaction.objects.count() == 0
    ok = api_client.post("/api/predict", GOOD, format="json")
    assert ok.status_code == 201


def test_recording_takes_the_add_transaction_permission(viewer_client):
    """Predict writes to the ledger and moves the card's profile: a signed-in user
    without "Can add transaction" gets a 403 that names it, and nothing is stored;
    once an admin grants it, the same request records the transaction. Reading
    and what-if scoring stay open to a Viewer."""
    from django.contrib.auth.models import Permission

    refused = viewer_client.post("/api/predict", GOOD, format="json")
    assert refused.status_code == 403
    assert "transactions.add_transaction" in refused.json()["detail"]
    assert not Transaction.objects.exists()
    assert not UserProfile.objects.exists()
    what_if = viewer_client.post("/api/validate-transaction", GOOD, format="json")
    assert what_if.status_code == 200

    viewer = viewer_client.user
    viewer.user_permissions.add(Permission.objects.get(codename="add_transaction"))
    viewer_client.force_authenticate(type(viewer).objects.get(pk=viewer.pk))
    assert viewer_client.post("/api/predict", GOOD, format="json").status_code == 201


@pytest.mark.parametrize("path", ["/api/predict", "/api/validate-transaction"])
def test_a_body_over_the_upload_limit_is_refused_unread(api_client, settings, path):
    """Bodies are held to DATA_UPLOAD_MAX_MEMORY_SIZE: a larger one is a 413 that
    says the limit, JSON or form-encoded, not read into memory and scored."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    padded = {**GOOD, "merchant_id": "m", "padding": "x" * 2000}
    for response in (
        api_client.post(path, padded, format="json"),
        api_client.post(path, padded),  # multipart
        api_client.generic(
            "POST",
            path,
            "&".join(f"{key}={value}" for key, value in padded.items()),
            content_type="application/x-www-form-urlencoded",
        ),
    ):
        assert response.status_code in (400, 413), response.content
    response = api_client.post(path, padded, format="json")
    assert response.status_code == 413
    assert "1,000 bytes" in response.json()["detail"]
    # A multipart file part counts too (Django's parser would stream it to disk).
    upload = {**GOOD, "attachment": io.BytesIO(b"x" * 6000)}
    response = api_client.post(path, upload, format="multipart")
    assert response.status_code == 413
    assert "1,000 bytes" in response.json()["detail"]
    assert not Transaction.objects.exists()


def test_a_file_part_is_refused(api_client):
    """No endpoint takes a file: a small multipart body with one is a 400 that says
    so; the same fields without it are scored."""
    upload = {**GOOD, "attachment": io.BytesIO(b"x" * 100)}
    response = api_client.post("/api/predict", upload, format="multipart")
    assert response.status_code == 400
    assert "File uploads are not accepted" in response.json()["detail"]
    assert not Transaction.objects.exists()
    assert api_client.post("/api/predict", GOOD, format="multipart").status_code == 201


def test_what_if_without_a_time_on_a_busy_card_waits_its_usual_gap(
    api_client, settings
):
    """A card paying every two hours, its feed a day ahead: an untimed what-if
    at home is judged two hours after its last payment, not one second (which
    velocity and the model read as a burst), and comes back legit."""
    from datetime import UTC, datetime, timedelta

    settings.TRANSACTION_MAX_FUTURE_SECONDS = None  # a simulator ahead of the clock
    ahead = datetime.now(UTC) + timedelta(days=1)
    for n in range(6):
        stored = api_client.post(
            "/api/predict",
            {
                **GOOD,
                "transaction_id": f"busy-{n}",
                "user_id": "busy",
                "amount": "30.00",
                "location": "London",
                "timestamp": (ahead + timedelta(hours=2 * n)).isoformat(),
            },
            format="json",
        )
        assert stored.status_code == 201, stored.content
    probe = {"user_id": "busy", "amount": "30.00", "location": "London"}
    body = api_client.post("/api/validate-transaction", probe, format="json").json()
    assert any("judged 2.0 h after" in note for note in body["notes"]), body
    assert body["status"] == "legit", body


def test_what_if_for_a_card_without_history_says_so(api_client):
    probe = {"user_id": "nobody-knows-me", "amount": "30.00"}
    body = api_client.post("/api/validate-transaction", probe, format="json").json()
    assert any(
        "No stored history for card 'nobody-knows-me'" in n for n in body["notes"]
    )


def test_deeply_nested_json_is_a_400_not_a_500(api_client):
    """A body nested 100,000 deep overflows Python's JSON parser: the caller gets
    a 400 that says so, and the server stays up."""
    body = "[" * 100_000 + "]" * 100_000
    response = api_client.generic(
        "POST", "/api/predict", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_what_if_without_a_time_is_judged_after_the_cards_last_transaction(
    api_client, settings
):
    """A card whose feed runs ahead of the clock (its last transaction is dated
    tomorrow, in New York): a what-if in Sydney with no time is judged one usual
    gap of the card after that transaction, so impossible travel is checked and
    fires, and a note says which time was used. With an explicit earlier time it
    arrives late instead."""
    from datetime import UTC, datetime, timedelta

    settings.TRANSACTION_MAX_FUTURE_SECONDS = None  # a simulator ahead of the clock
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    stored = api_client.post(
        "/api/predict",
        {**GOOD, "user_id": "ahead", "timestamp": ahead, "location": "New York"},
        format="json",
    )
    assert stored.status_code == 201
    probe = {"user_id": "ahead", "amount": "40.00", "location": "Sydney"}
    untimed = api_client.post("/api/validate-transaction", probe, format="json")
    assert untimed.status_code == 200
    body = untimed.json()
    assert "geo_velocity" in [reason["code"] for reason in body["reasons"]]
    # One stored transaction: no usual gap yet, so one hour after it.
    assert any(
        "judged 1.0 h after the card's last transaction" in n for n in body["notes"]
    )
    timed = api_client.post(
        "/api/validate-transaction",
        {**probe, "timestamp": datetime.now(UTC).isoformat()},
        format="json",
    )
    assert "geo_velocity" not in [reason["code"] for reason in timed.json()["reasons"]]
    assert any("travel not checked" in note for note in timed.json()["notes"])


def test_a_currency_without_an_exchange_rate_is_a_400(api_client):
    """Amounts are compared in the base currency: predict and what-if refuse a
    currency with no rate, naming the field; seeded currencies (JPY) are taken
    and converted (15,000 JPY is not a huge amount)."""
    for path in ("/api/predict", "/api/validate-transaction"):
        response = api_client.post(path, {**GOOD, "currency": "KES"}, format="json")
        assert response.status_code == 400
        assert "No exchange rate for KES" in response.json()["currency"][0]
    yen = {**GOOD, "transaction_id": "tx-yen", "amount": "15000", "currency": "JPY"}
    response = api_client.post("/api/predict", yen, format="json")
    assert response.status_code == 201
    assert response.json()["currency"] == "JPY"
    assert "huge_amount" not in [r["code"] for r in response.json()["reasons"]]


def test_a_code_that_is_no_currency_is_a_400_saying_so(api_client):
    """ "ABC" is three capitals but no currency: the error says that, rather than
    asking for an exchange rate no one could set."""
    response = api_client.post(
        "/api/predict", {**GOOD, "currency": "abc"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["currency"] == [
        "ABC is not the ISO 4217 code of a currency in use (e.g. USD, EUR)."
    ]


def test_api_docs_page_uses_local_assets(anon_client):
    """Swagger UI is served from the sidecar wheel's files: nothing is fetched
    from a CDN (the machine may have no internet)."""
    import re

    page = anon_client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/api/schema/" in html
    scripts = re.findall(r'src="([^"]+)"', html)
    assert scripts and all(src.startswith("/static/") for src in scripts), scripts
    assert "http://" not in html.replace("http://testserver", "") and (
        "https://" not in html
    )
    asset = anon_client.get(scripts[0])
    assert asset.status_code == 200


def test_a_country_that_is_no_iso_code_is_a_field_error(api_client):
    """ "ZZ" or "UK" is no ISO 3166-1 country: a 400 naming the field, as for the
    list entries; a lower-case real code is accepted as upper case."""
    for code in ("ZZ", "UK"):
        response = api_client.post(
            "/api/validate-transaction", {**GOOD, "country": code}, format="json"
        )
        assert response.status_code == 400, code
        assert "ISO 3166-1" in response.json()["country"][0]
    fine = api_client.post(
        "/api/validate-transaction", {**GOOD, "country": "gb"}, format="json"
    )
    assert fine.status_code == 200, fine.content
    block = {"kind": "country", "value": "ZZ", "action": "block", "note": "typo"}
    refused = api_client.post("/api/lists", block, format="json")
    assert refused.status_code == 400
    assert "ISO 3166-1" in str(refused.json())


def test_is_fraud_is_checked_as_a_boolean_then_ignored(api_client):
    """`is_fraud` is of the message schema (a boolean): `"yes"` was taken (a
    201) as the API dropped it unread. It is checked as the stream checks it,
    a 400 naming it, and a valid one is still never a scoring input or stored."""
    for value in ("yes", 2, [True]):
        for path in ("/api/predict", "/api/validate-transaction"):
            refused = api_client.post(path, {**GOOD, "is_fraud": value}, format="json")
            assert refused.status_code == 400, (path, value)
            assert refused.json() == {"is_fraud": ["Must be a boolean."]}
    assert Transaction.objects.count() == 0
    taken = api_client.post("/api/predict", {**GOOD, "is_fraud": True}, format="json")
    assert taken.status_code == 201
    assert taken.json()["is_fraud"] is None
    assert Transaction.objects.get().is_fraud is None


def test_an_amount_under_a_base_cent_is_kept_as_compared_by_all_that_read_it(
    api_client,
):
    """Given six payments under a US cent (0.001 and 0.002 KWD: 0.0033 and
    0.0065 USD), predict answers, and the ledger stores, each amount in USD as
    the profile compared it, not 0.0 or 0.01; a 5,000 USD payment after them is
    measured against that typical amount; and a backtest's replay of the
    ledger (`ledger_messages`, as a retrain or a label reads it) builds the
    card's profile the stream built."""
    from datetime import UTC, datetime, timedelta

    from detection.backtest import ledger_messages
    from detection.models import ExchangeRate
    from detection.profiles import OrmStateStore
    from detection.scoring import scoring_config_from_db
    from detection.scoring.features import transaction_features_batch
    from detection.state import UserState

    rate = ExchangeRate.objects.get(currency="KWD").units_per_base
    start = datetime(2026, 3, 1, 9, tzinfo=UTC)
    amounts = ["0.001", "0.002"] * 3
    for n, amount in enumerate(amounts):
        payment = {
            "transaction_id": f"fils-{n}",
            "user_id": "zero1",
            "amount": amount,
            "currency": "KWD",
            "timestamp": (start + timedelta(hours=n)).isoformat(),
        }
        response = api_client.post("/api/predict", payment, format="json")
        assert response.status_code == 201, response.content
        in_usd = float(amount) / rate
        assert response.json()["amount_base"] == pytest.approx(in_usd, rel=1e-12)
        stored = Transaction.objects.get(transaction_id=f"fils-{n}")
        assert stored.amount_base == pytest.approx(in_usd, rel=1e-12)

    live = OrmStateStore(use_cache=False).states_get({"zero1"})["zero1"]
    typical = (0.001 * 0.002) ** 0.5 / rate  # the geometric mean
    assert live.typical_amount == pytest.approx(typical, rel=1e-9)
    big = {"user_id": "zero1", "amount": "5000", "timestamp": "2026-03-01T16:00Z"}
    reasons = api_client.post("/api/predict", big, format="json").json()["reasons"]
    (spike,) = [r for r in reasons if r["code"] == "amount_spike"]
    assert spike["values"]["ratio"] == pytest.approx(5000 / typical, rel=1e-6)

    replayed = ledger_messages(since=start, until=start + timedelta(hours=6))
    states = {"zero1": UserState(user_id="zero1")}
    rates = scoring_config_from_db(model=None).rates
    prepared = transaction_features_batch(replayed, states=states, rates=rates)
    assert [item.row.amount for item in prepared] == pytest.approx(
        [float(amount) / rate for amount in amounts], rel=1e-12
    )
    assert states["zero1"].log_amount_mean == pytest.approx(
        live.log_amount_mean, rel=1e-12
    )
