"""A fraud verdict an analyst marks legitimate teaches the card's profile."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from detection.models import UserProfile
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record, transaction_label
from transactions.messages import transaction_message_parse
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def _record(
    store,
    tid: str,
    minutes: int,
    amount: str,
    location: str,
    country: str,
    currency: str = "USD",
):
    message = transaction_message_parse(
        {
            "transaction_id": tid,
            "user_id": "traveller",
            "amount": amount,
            "currency": currency,
            "timestamp": (START + timedelta(minutes=minutes)).isoformat(),
            "merchant_id": f"m-{tid}",
            "location": location,
            "country": country,
        }
    )
    transaction_batch_score_record(
        messages=[message],
        store=store,
        config=scoring_config_from_db(model=None),
        source="test",
    )
    return Transaction.objects.get(transaction_id=tid)


@pytest.fixture
def stream_store():
    """The consumer's state store (cached), with ten days of New York purchases,
    the last an hour before a $900 purchase in Lagos that was judged fraud."""
    store = OrmStateStore()
    for day in range(10):
        _record(store, f"ny-{day}", -60 - 1440 * (9 - day), "40.00", "New York", "US")
    lagos = _record(store, "lagos-1", 0, "900.00", "Lagos", "NG")
    assert lagos.status == Transaction.Status.FRAUD
    profile = UserProfile.objects.get(user_id="traveller")
    assert (profile.txn_count, profile.learned_count) == (11, 10)
    assert profile.last_location == "New York"
    return store


def test_marking_a_fraud_verdict_legitimate_teaches_the_profile(
    stream_store, api_client
):
    """Given the Lagos purchase judged fraud, when the analyst marks it
    legitimate through the API, the card's last place is Lagos, Nigeria is a known
    country and the amount is in its statistics; the stream's next Lagos purchase
    (its cached state is reloaded) is compared with Lagos, not New York. The
    stored verdict is unchanged."""
    response = api_client.post(
        reverse("transaction-label", args=["lagos-1"]),
        {"is_fraud": False, "note": "cardholder is travelling"},
        format="json",
    )
    assert response.status_code == 201
    profile = UserProfile.objects.get(user_id="traveller")
    assert (profile.txn_count, profile.learned_count) == (11, 11)
    assert profile.last_location == "Lagos"
    assert profile.countries == ["US", "NG"]
    assert Transaction.objects.get(transaction_id="lagos-1").status == "fraud"

    later = _record(stream_store, "lagos-2", 90, "60.00", "Lagos", "NG")
    assert "geo_velocity" not in later.reason_codes
    assert later.status == Transaction.Status.LEGIT


def test_without_the_label_the_next_purchase_abroad_is_still_impossible_travel(
    stream_store,
):
    """The same card, unlabelled: Lagos again 90 minutes later is compared with
    New York (the fraud verdict taught nothing) and is impossible travel."""
    later = _record(stream_store, "lagos-2", 90, "60.00", "Lagos", "NG")
    assert "geo_velocity" in later.reason_codes


def test_the_profile_learns_a_transaction_once(stream_store, staff_user):
    """Legitimate, then fraud, then legitimate again: the profile learned the
    purchase once. A legitimate label on a verdict that was not fraud (already
    learned) changes nothing."""
    lagos = Transaction.objects.get(transaction_id="lagos-1")
    for is_fraud in (False, True, False):
        transaction_label(record=lagos, is_fraud=is_fraud, created_by=staff_user)
    profile = UserProfile.objects.get(user_id="traveller")
    assert (profile.txn_count, profile.learned_count) == (11, 11)

    ordinary = Transaction.objects.get(transaction_id="ny-9")
    transaction_label(record=ordinary, is_fraud=False, created_by=staff_user)
    profile.refresh_from_db()
    assert (profile.txn_count, profile.learned_count) == (11, 11)


def test_a_label_added_in_admin_teaches_the_profile_too(
    stream_store, client, staff_user
):
    """The admin's "Add label" form goes through the same service as the API
    (as the analyst's label: chargebacks come from their feed)."""
    client.force_login(staff_user)
    lagos = Transaction.objects.get(transaction_id="lagos-1")
    response = client.post(
        reverse("admin:transactions_label_add"),
        {"transaction": lagos.pk, "is_fraud": "", "note": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    label = lagos.labels.get()
    assert (label.is_fraud, label.source, label.created_by) == (
        False,
        "analyst",
        staff_user,
    )
    assert UserProfile.objects.get(user_id="traveller").last_location == "Lagos"


def test_a_fraud_verdict_the_profile_already_learned_is_not_taught_again(
    stream_store, staff_user
):
    """A fraud verdict stored before fraud stopped teaching (its profile learned
    it then: profile_learned is True) teaches nothing when marked legitimate."""
    lagos = Transaction.objects.get(transaction_id="lagos-1")
    assert lagos.profile_learned is False
    Transaction.objects.filter(pk=lagos.pk).update(profile_learned=True)
    transaction_label(record=lagos, is_fraud=False, created_by=staff_user)
    profile = UserProfile.objects.get(user_id="traveller")
    assert (profile.txn_count, profile.learned_count) == (11, 10)
    assert profile.last_location == "New York"


def test_a_label_teaches_the_amount_as_it_was_scored_whatever_the_rate_now(
    stream_store, staff_user
):
    """Given a 900 EUR purchase in Lagos judged fraud and the EUR rate edited
    since, marking it legitimate teaches the profile the amount in the base
    currency it was compared at (stored with the verdict), as a retrain
    replays it, not 900 EUR converted at today's rate."""
    from detection.models import ExchangeRate

    stored = _record(stream_store, "lagos-eur", 5, "900.00", "Lagos", "NG", "EUR")
    assert stored.status == Transaction.Status.FRAUD and not stored.profile_learned
    before = UserProfile.objects.get(user_id="traveller").log_amount_mean
    ExchangeRate.objects.filter(currency="EUR").update(units_per_base=0.01)
    transaction_label(record=stored, is_fraud=False, created_by=staff_user)
    profile = UserProfile.objects.get(user_id="traveller")
    assert profile.learned_count == 11
    expected = before + (math.log(stored.amount_base) - before) / 11
    assert math.isclose(profile.log_amount_mean, expected, rel_tol=1e-9)
