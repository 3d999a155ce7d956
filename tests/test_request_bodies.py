"""Request bodies: an unknown field is a 400 naming it, as an unknown query
parameter is, on every endpoint that takes a body; the browsable API's forms,
which carry fields of their own, still work."""

import pytest
from django.test import Client

from detection.models import DecisionThresholds, ListEntry, Rule
from transactions.models import Label, Transaction

pytestmark = pytest.mark.django_db

PAYMENT = {"user_id": "card-1", "amount": "25.00", "location": "London"}


@pytest.fixture
def stored(api_client):
    """Return the id of one stored transaction."""
    response = api_client.post(
        "/api/predict", {**PAYMENT, "transaction_id": "t-1"}, format="json"
    )
    assert response.status_code == 201
    return "t-1"


def _known(*names):
    return [f"Unknown field. Known: {', '.join(names)}."]


MESSAGE_FIELDS = (
    "amount, channel, country, currency, is_fraud, latitude, location, longitude, "
    "merchant_category, merchant_id, timestamp, transaction_id, user_id"
)


def _written() -> tuple:
    """What the endpoints below could have written."""
    return (
        Transaction.objects.count(),
        Label.objects.count(),
        ListEntry.objects.count(),
        list(Rule.objects.values_list("weight", "updated_at")),
        list(DecisionThresholds.objects.values_list("suspicious", "updated_at")),
    )


@pytest.mark.parametrize(
    "method, path, body, known",
    [
        (
            "post",
            "/api/predict",
            {**PAYMENT, "amout": "5", "is_fraud": True},
            [f"Unknown field. Known: {MESSAGE_FIELDS}."],
        ),
        (
            "post",
            "/api/validate-transaction",
            {**PAYMENT, "amout": "5"},
            [f"Unknown field. Known: {MESSAGE_FIELDS}."],
        ),
        (
            "post",
            "/api/transactions/t-1/label",
            {"is_fraud": True, "amout": "5"},
            _known("is_fraud", "note"),
        ),
        (
            "post",
            "/api/lists",
            {"kind": "card", "value": "c", "action": "block", "note": "n", "amout": 1},
            _known("action", "expires_at", "kind", "note", "value"),
        ),
        (
            "patch",
            "/api/rules/huge_amount",
            {"weight": 0.2, "amout": 1},
            _known("description", "enabled", "name", "params", "weight"),
        ),
        (
            "patch",
            "/api/thresholds",
            {"suspicious": 0.4, "amout": 1},
            _known("fraud", "suspicious"),
        ),
        (
            "post",
            "/api/backtest",
            {"since": "2026-01-01T00:00:00Z", "train_until": "x", "amout": 1},
            _known("draft", "label_maturity_days", "since", "train_until", "until"),
        ),
        (
            "post",
            "/api/backtest/jobs",
            {"since": "2026-01-01T00:00:00Z", "train_until": "x", "amout": 1},
            _known("draft", "label_maturity_days", "since", "train_until", "until"),
        ),
    ],
)
def test_an_unknown_body_field_is_a_400_naming_it(
    api_client, stored, method, path, body, known
):
    """`{"amout": 5}` was dropped without a word and the request answered as
    if it applied (PATCH /api/thresholds {"bogus": 1} a 200 that moved
    updated_at); now a 400 naming it, the same for a form, and nothing changes."""
    before = _written()
    for format in ("json", "multipart"):
        response = getattr(api_client, method)(path, body, format=format)
        assert response.status_code == 400, (format, response.content)
        assert response.json() == {"amout": known}, format
    after = _written()
    assert after == before


def test_a_thresholds_patch_of_an_unknown_field_alone_changes_nothing(api_client):
    """The reviewer's case: `{"bogus": 1}` answered 200 and moved updated_at."""
    first = api_client.get("/api/thresholds").json()
    response = api_client.patch("/api/thresholds", {"bogus": 1}, format="json")
    assert response.status_code == 400
    assert response.json() == {"bogus": _known("fraud", "suspicious")}
    assert api_client.get("/api/thresholds").json() == first


def test_read_only_fields_sent_back_are_no_error(api_client):
    """A GET's body sent back with one value changed is taken: read-only fields
    (updated_at, code, params_schema, created_by) are known, and ignored."""
    thresholds = api_client.get("/api/thresholds").json()
    changed = api_client.patch(
        "/api/thresholds", {**thresholds, "suspicious": 0.45}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["suspicious"] == 0.45
    rule = api_client.get("/api/rules/huge_amount").json()
    changed = api_client.patch(
        "/api/rules/huge_amount", {**rule, "weight": 0.25}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["weight"] == 0.25


def test_the_browsable_api_forms_still_post(staff_user, stored):
    """The browsable API's HTML forms post multipart with the CSRF token as a
    field (`csrfmiddlewaretoken`), signed in by session: taken, not refused
    as unknown; a JSON body carrying it is refused."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    page = browser.get("/api/predict", HTTP_ACCEPT="text/html")
    assert page.status_code == 405  # GET: the form page, with the CSRF cookie
    token = browser.cookies["csrftoken"].value
    form = {"csrfmiddlewaretoken": token}

    scored = browser.post("/api/predict", {**form, **PAYMENT, "transaction_id": ""})
    assert scored.status_code == 201, scored.content
    labelled = browser.post(
        "/api/transactions/t-1/label", {**form, "is_fraud": "true", "note": "x"}
    )
    assert labelled.status_code == 201, labelled.content
    assert Label.objects.get().is_fraud is True
    # The raw-data form's own fields, as a form sends them, are no error either.
    raw = {**form, "_content_type": "application/json", "_content": ""}
    entry = {"kind": "card", "value": "c-9", "action": "block", "note": "n"}
    added = browser.post("/api/lists", {**raw, **entry, "expires_at": ""})
    assert added.status_code == 201, added.content

    unknown = browser.post("/api/transactions/t-1/label", {**form, "bogus": "1"})
    assert unknown.status_code == 400
    as_json = browser.post(
        "/api/transactions/t-1/label",
        {"is_fraud": True, "csrfmiddlewaretoken": token},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert as_json.status_code == 400
    assert list(as_json.json()) == ["csrfmiddlewaretoken"]
    assert Label.objects.count() == 1


def test_thresholds_take_get_and_patch_only(api_client):
    """README lists GET and PATCH: a PUT (which replaced both, as a 200) is a 405."""
    put = api_client.put(
        "/api/thresholds", {"suspicious": 0.5, "fraud": 0.8}, format="json"
    )
    assert put.status_code == 405
    assert api_client.options("/api/thresholds").status_code == 200
    assert "PUT" not in api_client.options("/api/thresholds")["Allow"]
    assert api_client.patch(
        "/api/thresholds", {"fraud": 0.9}, format="json"
    ).status_code == (200)
