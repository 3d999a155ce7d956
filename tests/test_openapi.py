"""The OpenAPI schema (/api/schema) says what the endpoints accept and return.

A strict generated client trusts the schema: each fact here is checked against
the schema and, where it can be, against what the API really does.
"""

import re

import pytest

from transactions.messages import MessageError, transaction_message_parse

pytestmark = pytest.mark.django_db

PAYMENT = {"user_id": "card-1", "amount": "25.00", "location": "London"}


@pytest.fixture
def schema(anon_client):
    """Return the schema as served at /api/schema."""
    response = anon_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def _component(schema, name):
    return schema["components"]["schemas"][name]


def _ref(schema, node):
    """Return the component a `$ref` (or a one-item allOf around it) names."""
    if "allOf" in node:
        (node,) = node["allOf"]
    return _component(schema, node["$ref"].rsplit("/", 1)[-1])


def _operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_amount_is_a_decimal_string_or_a_number(schema):
    """amount: a decimal string (README sends "25.00") or a JSON number, whose
    pattern agrees with the parser the API delegates to in the currency with
    the most decimals (KWD, 3); the description says each currency has its
    own (a pattern on one field cannot)."""
    for name in ("TransactionMessage", "WhatIf"):
        amount = _component(schema, name)["properties"]["amount"]
        kinds = {kind["type"]: kind for kind in amount["oneOf"]}
        assert set(kinds) == {"string", "number"}
        assert kinds["number"]["minimum"] == 0.001
        assert "minor unit" in amount["description"]
    # ECMA-262 \d and \s are ASCII-only, as re.ASCII makes them here.
    pattern = re.compile(kinds["string"]["pattern"], re.ASCII)

    def parses(text, currency="KWD"):
        try:
            transaction_message_parse(
                {"user_id": "u", "amount": text, "currency": currency},
                require_transaction_id=False,
            )
        except MessageError as exc:
            assert set(exc.errors) == {"amount"}
            return False
        return True

    for text in ("25.00", "25", "25.5", "12.500", " 7.10 ", "+3", ".5", "12."):
        assert parses(text) and pattern.match(text), text
    for text in ("25.001", "12.3450", ".001"):
        assert parses(text) and pattern.match(text), text
    for text in ("1e3", "25.0001", "1,000", "1_000", "NaN", "-5", "25 USD", "\u0663"):
        assert not parses(text) and not pattern.match(text), text
    # Fewer decimals in other currencies: the description's rule, not the pattern's.
    assert not parses("25.001", "USD") and not parses("25.5", "JPY")


def test_a_stored_amount_is_shown_with_its_currency_decimals(schema, api_client):
    """Transaction.amount is a decimal string with as many decimals as its
    currency has (the pattern holds for 12.50 USD and 100 JPY, as answered and
    as read back from the ledger's 3-decimal column)."""
    amount = _component(schema, "Transaction")["properties"]["amount"]
    assert (amount["type"], amount["format"]) == ("string", "decimal")
    pattern = re.compile(amount["pattern"], re.ASCII)
    for payment, shown in (
        ({**PAYMENT, "amount": "12.500"}, "12.50"),
        ({**PAYMENT, "amount": "100.00", "currency": "JPY"}, "100"),
    ):
        response = api_client.post("/api/predict", payment, format="json")
        assert response.status_code == 201
        assert response.json()["amount"] == shown and pattern.match(shown)
        path = f"/api/transactions/{response.json()['transaction_id']}"
        assert api_client.get(path).json()["amount"] == shown


def test_timestamp_is_an_iso_string_or_epoch_seconds(schema, api_client):
    """timestamp: an ISO 8601 date-time string, or epoch seconds as a number."""
    timestamp = _component(schema, "TransactionMessage")["properties"]["timestamp"]
    kinds = {kind["type"]: kind for kind in timestamp["oneOf"]}
    assert kinds["string"]["format"] == "date-time"
    assert kinds["number"]["minimum"] == 946684800  # 2000-01-01
    for value in ("2026-03-01T10:00:00Z", 1772359200):
        response = api_client.post(
            "/api/validate-transaction", {**PAYMENT, "timestamp": value}, format="json"
        )
        assert response.status_code == 200, response.json()


def test_reasons_are_reason_objects_and_notes_strings(schema, api_client):
    """Transaction.reasons is an array of Reason, holding exactly the keys a
    stored verdict's reasons have; notes an array of strings."""
    properties = _component(schema, "Transaction")["properties"]
    assert properties["reasons"]["type"] == "array"
    reason = _ref(schema, properties["reasons"]["items"])
    notes = properties["notes"]
    assert (notes["type"], notes["items"]) == ("array", {"type": "string"})
    response = api_client.post(
        "/api/predict", {**PAYMENT, "amount": "99999.00"}, format="json"
    )
    assert response.status_code == 201
    reasons = response.json()["reasons"]
    assert reasons
    for stored in reasons:
        assert set(stored) == set(reason["properties"]) == set(reason["required"])
    assert all(isinstance(note, str) for note in response.json()["notes"])
    # The what-if verdict's reasons are the same component.
    what_if = _component(schema, "WhatIfVerdict")["properties"]["reasons"]
    assert _ref(schema, what_if["items"]) == reason


def test_what_if_status_is_the_status_enum(schema):
    """WhatIfVerdict.status is legit/suspicious/fraud, as Transaction.status is."""
    status = _component(schema, "WhatIfVerdict")["properties"]["status"]
    assert _ref(schema, status)["enum"] == ["legit", "suspicious", "fraud"]
    assert _ref(schema, status) == _ref(
        schema, _component(schema, "Transaction")["properties"]["status"]
    )


def test_ordering_lists_every_value_the_list_accepts(schema, api_client):
    """`ordering` has an enum (with `-` variants), each value a 200, says that
    amount sorts by amount_base and that a second column is a 400."""
    for path in ("/api/transactions/", "/api/transactions/export/"):
        (ordering,) = [
            parameter
            for parameter in schema["paths"][path]["get"]["parameters"]
            if parameter["name"] == "ordering"
        ]
        enum = ordering["schema"]["enum"]
        assert {"amount", "-amount", "-id", "risk_score", "-scored_at"} <= set(enum)
        assert "amount_base" in ordering["description"]
        assert "400" in ordering["description"]
    for value in enum:
        response = api_client.get(f"/api/transactions?ordering={value}")
        assert response.status_code == 200, (value, response.json())
    assert api_client.get("/api/transactions?ordering=amount_base").status_code == 400
    assert api_client.get("/api/transactions?ordering=amount,id").status_code == 400


def test_list_meta_documents_the_fields_it_returns(schema, api_client):
    """The list's meta is documented field by field: exactly what it returns."""
    page = _component(schema, "PaginatedTransactionList")
    meta = page["properties"]["meta"]
    assert "next" in meta["properties"] and "matching" in meta["properties"]
    assert not meta.get("additionalProperties")
    api_client.post("/api/predict", PAYMENT, format="json")
    returned = api_client.get("/api/transactions?count=1").json()["meta"]
    assert set(returned) == set(meta["properties"]) == set(meta["required"])
    assert set(returned["by_status"]) == set(
        meta["properties"]["by_status"]["properties"]
    )


def test_error_responses_are_documented(schema, anon_client, viewer_client):
    """400 on every operation (an unknown `?format=` is one), 401, 403 and 429
    on every one that needs credentials (reading takes a role too), 404 where
    the path has an id, each with its body; predict's 409 body."""
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        assert "400" in responses, where
        if operation.get("security") != [{}]:
            assert {"401", "403", "429"} <= set(responses), where
        if "{" in path:
            assert "404" in responses, where
        if method in ("post", "put", "patch", "delete"):
            assert "403" in responses, where
        for code, response in responses.items():
            if code >= "400":
                assert "content" in response, (where, code)
        assert "Retry-After" in responses["429"].get("headers", {}), where
    error = _component(schema, "Error")
    assert error["required"] == ["detail"]
    response = anon_client.get("/api/transactions")
    assert response.status_code == 401 and set(response.json()) == {"detail"}
    response = viewer_client.post("/api/predict", PAYMENT, format="json")
    assert response.status_code == 403 and set(response.json()) == {"detail"}
    for path in ("/api/thresholds?x=1", "/api/rules/amount_spike?format=xml"):
        assert viewer_client.get(path).status_code == 400, path
    assert anon_client.get("/api/?format=xml").status_code == 400

    conflict = schema["paths"]["/api/predict/"]["post"]["responses"]["409"]
    body = _ref(schema, conflict["content"]["application/json"]["schema"])
    assert body["properties"]["transaction_id"]["type"] == "array"


def test_predict_conflict_body_matches_its_schema(schema, api_client):
    """A 409 of predict is {"transaction_id": [message]}, as documented."""
    first = api_client.post(
        "/api/predict", {**PAYMENT, "transaction_id": "t-1"}, format="json"
    )
    assert first.status_code == 201
    response = api_client.post(
        "/api/predict",
        {**PAYMENT, "transaction_id": "t-1", "amount": "26.00"},
        format="json",
    )
    assert response.status_code == 409
    conflict = schema["paths"]["/api/predict/"]["post"]["responses"]["409"]
    body = _ref(schema, conflict["content"]["application/json"]["schema"])
    assert set(response.json()) == set(body["properties"])
    assert all(isinstance(text, str) for text in response.json()["transaction_id"])


def test_request_bodies_are_json_or_form_never_multipart(schema, api_client):
    """Predict (and every body) is documented as JSON or a form, not multipart
    (a file part is a 400); both documented types really work."""
    content = schema["paths"]["/api/predict/"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/x-www-form-urlencoded"}
    for path, method, operation in _operations(schema):
        if "requestBody" in operation:
            assert "multipart/form-data" not in operation["requestBody"]["content"], (
                f"{method.upper()} {path}"
            )
    response = api_client.post(
        "/api/predict",
        "user_id=card-2&amount=25.00&location=London",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 201, response.json()


def test_backtest_jobs_are_documented_as_they_answer(schema, api_client):
    """POST /api/backtest/jobs is a 202 with the job and its address in
    Location; the job, listed or read alone, has exactly the documented
    fields; done, its `result` is the synchronous backtest's component."""
    from datetime import UTC, datetime, timedelta

    from detection.backtest_jobs import backtest_job_run
    from tests.ledger import transaction_stored

    jobs = schema["paths"]["/api/backtest/jobs/"]
    created = jobs["post"]["responses"]
    assert "200" not in created and "201" not in created
    accepted = created["202"]
    assert accepted["headers"]["Location"]["schema"]["format"] == "uri"
    job_schema = _ref(schema, accepted["content"]["application/json"]["schema"])
    listed = jobs["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["type"] == "array"
    assert _ref(schema, listed["schema"]["items"]) == job_schema
    one = schema["paths"]["/api/backtest/jobs/{id}/"]["get"]["responses"]["200"]
    assert _ref(schema, one["content"]["application/json"]["schema"]) == job_schema
    assert set(_ref(schema, job_schema["properties"]["status"])["enum"]) == {
        "queued",
        "running",
        "done",
        "failed",
        "cancelled",
    }
    cancel = schema["paths"]["/api/backtest/jobs/{id}/cancel/"]["post"]["responses"]
    assert _ref(schema, cancel["200"]["content"]["application/json"]["schema"]) == (
        job_schema
    )
    assert {"403", "404", "409"} <= set(cancel)
    result_schema = _ref(schema, job_schema["properties"]["result"])
    synchronous = schema["paths"]["/api/backtest/"]["post"]["responses"]["200"]
    assert result_schema == _ref(
        schema, synchronous["content"]["application/json"]["schema"]
    )

    start = datetime(2026, 1, 1, tzinfo=UTC)
    for hour in range(1, 301):  # 239 to train on (200 needed), 61 to score
        transaction_stored(f"t-{hour}", timestamp=start + timedelta(hours=hour))
    response = api_client.post(
        "/api/backtest/jobs",
        {"since": "2026-01-01T00:00:00Z", "train_until": "2026-01-11T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    job = response.json()
    assert response["Location"] == job["url"]
    properties = set(job_schema["properties"])
    assert set(job) == properties == set(job_schema["required"])
    assert backtest_job_run(job["id"]) == "done"
    done = api_client.get(response["Location"]).json()
    assert set(done) == properties
    assert api_client.get("/api/backtest/jobs").json() == [done]
    assert set(done["result"]) == set(result_schema["properties"])
    assert set(done["result"]["live"]) <= set(
        _ref(schema, result_schema["properties"]["live"])["properties"]
    )
