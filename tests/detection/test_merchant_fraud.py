"""The merchant_fraud rule: a merchant where analysts or chargebacks confirmed
fraud lately makes its next transactions suspicious (the compromised-shop case
the anomaly model cannot see: each card looks normal on its own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from detection.models import Rule
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record, transaction_label
from transactions.messages import TransactionMessage
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _rule_enabled():
    """Off in a new deployment (a count, not a rate); these tests switch it on."""
    assert not Rule.objects.get(code="merchant_fraud").enabled
    Rule.objects.filter(code="merchant_fraud").update(enabled=True)


def _score(tid: str, merchant: str, user: str | None = None) -> Transaction:
    message = TransactionMessage(
        transaction_id=tid,
        user_id=user or f"card-{tid}",
        amount=Decimal("35.00"),
        timestamp=T0,
        merchant_id=merchant,
    )
    transaction_batch_score_record(
        messages=[message],
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    return Transaction.objects.get(transaction_id=tid)


def _confirm_frauds(merchant: str, count: int, *, is_fraud: bool = True) -> None:
    for n in range(count):
        stored = _score(f"{merchant}-past-{n}-{is_fraud}", merchant)
        transaction_label(record=stored, is_fraud=is_fraud)


def test_three_confirmed_frauds_at_a_merchant_flag_its_next_transaction():
    _confirm_frauds("m-shady", 3)
    _confirm_frauds("m-fine", 2)  # below min_confirmed (3)
    flagged = _score("next-at-shady", "m-shady")
    assert flagged.status == "suspicious"
    (reason,) = flagged.reasons
    assert reason["code"] == "merchant_fraud"
    assert reason["values"] == {
        "merchant_id": "m-shady",
        "confirmed_fraud": 3,
        "min_confirmed": 3,
        "days": 14.0,
    }
    assert "merchant m-shady: 3 transactions confirmed as fraud" in reason["detail"]
    assert _score("next-at-fine", "m-fine").status == "legit"


def test_legit_labels_and_relabels_do_not_count():
    _confirm_frauds("m-busy", 3, is_fraud=False)
    assert _score("busy-next", "m-busy").status == "legit"
    _confirm_frauds("m-relabelled", 3)
    for txn in Transaction.objects.filter(merchant_id="m-relabelled"):
        transaction_label(record=txn, is_fraud=False)  # the latest label wins
    assert _score("relabelled-next", "m-relabelled").status == "legit"


def test_only_frauds_confirmed_within_the_window_count():
    """The window runs on when the label was given: a chargeback weeks after an
    old payment counts now; confirmations older than `days` do not."""
    from transactions.models import Label

    _confirm_frauds("m-old", 3)
    Transaction.objects.filter(merchant_id="m-old").update(
        scored_at=datetime.now(UTC) - timedelta(days=60)
    )
    assert _score("old-payments-new-labels", "m-old").status == "suspicious"
    Label.objects.filter(transaction__merchant_id="m-old").update(
        created_at=datetime.now(UTC) - timedelta(days=30)
    )
    from detection.merchants import merchant_fraud_cache_clear

    merchant_fraud_cache_clear()  # (a label edit behind the app's back)
    assert _score("old-labels", "m-old").status == "legit"


def test_a_disabled_rule_reads_no_labels():
    _confirm_frauds("m-shady", 3)
    Rule.objects.filter(code="merchant_fraud").update(enabled=False)
    config = scoring_config_from_db(model=None)
    assert config.merchant_fraud == {}
    assert _score("disabled-next", "m-shady").status == "legit"


def test_a_database_blip_at_refresh_keeps_the_last_rules(monkeypatch, caplog):
    """Scorers re-read rules every few seconds; if the database fails then, they
    keep scoring with the rules they have (the batch's own writes retry), and
    say so, instead of failing the batch on the refresh."""
    from django.db import OperationalError

    from detection.scoring import config as scoring

    provider = scoring.ScoringConfigProvider(refresh_seconds=0)
    first = provider.current()

    def down(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(scoring, "scoring_config_from_db", down)
    assert provider.current() is first
    assert "could not refresh rules and model" in caplog.text
    fresh = scoring.ScoringConfigProvider(refresh_seconds=0)
    with pytest.raises(OperationalError):  # nothing to fall back on: say so
        fresh.current()
