"""Analyst labels: stored as history, latest wins, never change the verdict."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site
from django.urls import reverse

from tests.ledger import transaction_stored
from transactions.models import Label, Transaction
from transactions.services import label_create

pytestmark = pytest.mark.django_db


def _transaction(transaction_id: str = "t-label-1") -> Transaction:
    return transaction_stored(transaction_id)


def _url(transaction_id: str) -> str:
    return reverse("transaction-label", args=[transaction_id])


def test_label_is_stored_with_analyst_and_shown_in_the_api(api_client, staff_user):
    """Given a transaction, when the analyst confirms fraud with a note, then the
    label is stored with who and when, and the transaction shows it as `label`."""
    txn = _transaction()
    response = api_client.post(
        _url(txn.transaction_id),
        {"is_fraud": True, "note": "card reported stolen"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["is_fraud"] is True
    assert body["source"] == "analyst"
    assert body["created_by"] == staff_user.username
    assert body["note"] == "card reported stolen"
    label = Label.objects.get()
    assert label.transaction == txn and label.created_by == staff_user

    detail = api_client.get(reverse("transaction-detail", args=[txn.transaction_id]))
    assert detail.json()["label"]["is_fraud"] is True
    listing = api_client.get(reverse("transaction-list"))
    assert listing.json()["items"][0]["label"]["note"] == "card reported stolen"


def test_latest_label_wins_and_history_is_kept(api_client):
    """Given a fraud label, when the analyst marks the transaction legitimate,
    then the API shows the newer label and both remain stored."""
    txn = _transaction()
    api_client.post(_url(txn.transaction_id), {"is_fraud": True}, format="json")
    api_client.post(_url(txn.transaction_id), {"is_fraud": False}, format="json")
    detail = api_client.get(reverse("transaction-detail", args=[txn.transaction_id]))
    assert detail.json()["label"]["is_fraud"] is False
    assert list(
        Label.objects.filter(transaction=txn)
        .latest_first()
        .values_list("is_fraud", flat=True)
    ) == [False, True]


def test_label_never_changes_the_verdict(api_client):
    """A label leaves status, risk score and reasons exactly as scored."""
    txn = _transaction()
    before = Transaction.objects.values(
        "status", "risk_score", "reasons", "reason_codes", "is_fraud"
    ).get(pk=txn.pk)
    api_client.post(_url(txn.transaction_id), {"is_fraud": False}, format="json")
    after = Transaction.objects.values(
        "status", "risk_score", "reasons", "reason_codes", "is_fraud"
    ).get(pk=txn.pk)
    assert after == before


@pytest.mark.parametrize(
    "payload,field",
    [
        ({}, "is_fraud"),
        ({"is_fraud": "maybe"}, "is_fraud"),
        ({"is_fraud": True, "note": "x" * 1001}, "note"),
    ],
)
def test_bad_label_input_is_refused_with_field_errors(api_client, payload, field):
    """Missing or invalid fields answer 400 naming the field; nothing is stored."""
    txn = _transaction()
    response = api_client.post(_url(txn.transaction_id), payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Label.objects.exists()


def test_label_on_unknown_transaction_is_404(api_client):
    """An unknown transaction id answers 404."""
    response = api_client.post(_url("nope"), {"is_fraud": True}, format="json")
    assert response.status_code == 404


def test_label_requires_authentication(anon_client):
    """Anonymous clients cannot label."""
    txn = _transaction()
    response = anon_client.post(
        _url(txn.transaction_id), {"is_fraud": True}, format="json"
    )
    assert response.status_code == 401
    assert not Label.objects.exists()


def test_transaction_list_fetches_labels_in_one_query(
    api_client, django_assert_max_num_queries
):
    """A page of transactions costs a constant number of queries, labelled or not."""
    for index in range(5):
        txn = _transaction(f"t-{index}")
        label_create(transaction=txn, is_fraud=bool(index % 2))
    # Page + totals aggregate + labels prefetch (+ auth/session overhead).
    with django_assert_max_num_queries(4):
        response = api_client.get(reverse("transaction-list"))
    assert all(item["label"] is not None for item in response.json()["items"])


def test_label_service_defaults_to_analyst_source():
    """label_create records an analyst label unless told otherwise."""
    txn = _transaction()
    label = label_create(transaction=txn, is_fraud=True, note="  spaced  ")
    assert label.source == Label.Source.ANALYST
    assert label.note == "spaced"
    chargeback = label_create(
        transaction=txn, is_fraud=True, source=Label.Source.CHARGEBACK
    )
    assert Label.objects.filter(transaction=txn).latest_first().first() == chargeback


def test_labels_are_in_admin(client, staff_user):
    """Admin lists labels and shows the latest label on the transaction list."""
    assert Label in site._registry
    txn = _transaction()
    label_create(transaction=txn, is_fraud=True, created_by=staff_user)
    client.force_login(staff_user)
    assert client.get(reverse("admin:transactions_label_changelist")).status_code == 200
    changelist = client.get(reverse("admin:transactions_transaction_changelist"))
    assert b"fraud (analyst)" in changelist.content
    change = client.get(reverse("admin:transactions_transaction_change", args=[txn.pk]))
    assert change.status_code == 200


def test_labelling_takes_the_add_label_permission(viewer_client, client):
    """A signed-in user without "Can add label" reads labels but cannot add one:
    the API refuses with a 403 and the detail page shows no label form."""
    transaction = _transaction()
    response = viewer_client.post(_url(transaction.transaction_id), {"is_fraud": True})
    assert response.status_code == 403
    assert "transactions.add_label" in response.json()["detail"]
    assert not Label.objects.exists()
    client.force_login(viewer_client.user)
    page = client.get(f"/transactions/{transaction.transaction_id}/").content.decode()
    assert 'id="label-form"' not in page
    assert "Can add label" in page


def test_a_label_added_in_admin_is_an_analysts(client, staff_user):
    """Admin's Add label offers no source: a label typed in is the analyst's,
    even when the form is posted with source=chargeback (chargebacks come from
    the feed, where they carry their reference)."""
    txn = _transaction()
    client.force_login(staff_user)
    url = reverse("admin:transactions_label_add")
    assert 'name="source"' not in client.get(url).content.decode()
    response = client.post(
        url,
        {
            "transaction": txn.pk,
            "is_fraud": "on",
            "note": "typed",
            "source": "chargeback",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    label = Label.objects.get(transaction=txn)
    assert label.source == "analyst" and label.created_by == staff_user
