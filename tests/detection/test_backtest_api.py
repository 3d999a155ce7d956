"""POST /api/backtest: the stored ledger replayed, the live rules against a draft."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group

from detection.profiles import OrmStateStore
from detection.roles import ROLE_SCORING_CLIENT
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from detection.simulator import simulate_transactions
from tests.detection.test_roles import _api
from tests.ledger import transaction_stored
from transactions.messages import transaction_message_parse
from transactions.models import Label, Transaction

pytestmark = pytest.mark.django_db

START = datetime(2026, 1, 1, tzinfo=UTC)
TRAIN_UNTIL = "2026-01-08T00:00:00Z"


@pytest.fixture
def ledger_simulated():
    """Twelve days of 100 simulated cardholders, scored and stored, with every
    simulated fraud labelled fraud and every 20th other payment legitimate."""
    records = list(simulate_transactions(users=100, days=12, seed=5, start=START))
    config = scoring_config_from_db(model=None)
    for first in range(0, len(records), 1000):
        transaction_batch_score_record(
            messages=[
                transaction_message_parse(r) for r in records[first : first + 1000]
            ],
            store=OrmStateStore(),
            config=config,
            source="file",
        )
    truth = {r["transaction_id"]: r["is_fraud"] for r in records}
    stored = Transaction.objects.values_list("pk", "transaction_id")
    Label.objects.bulk_create(
        Label(transaction_id=pk, is_fraud=truth[tid], source=Label.Source.CHARGEBACK)
        for index, (pk, tid) in enumerate(stored)
        if truth[tid] or index % 20 == 0
    )
    return records


def test_a_draft_is_compared_with_the_live_rules_on_the_stored_ledger(
    api_client, ledger_simulated
):
    """Train before train_until, score the rest twice (live, draft); the labels
    are the ground truth; nothing live changes."""
    rules_before = list(scoring_config_from_db(model=None).rules)
    count_before = Transaction.objects.count()
    response = api_client.post(
        "/api/backtest",
        {
            "since": "2026-01-01T00:00:00Z",
            "train_until": TRAIN_UNTIL,
            "until": "2026-02-01T00:00:00Z",
            "draft": {
                "rules": {"amount_spike": {"enabled": False}},
                "thresholds": {"suspicious": 0.4},
            },
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    train_until = datetime.fromisoformat(TRAIN_UNTIL)
    assert body["replayed"] == len(ledger_simulated)
    assert body["trained_on"] == sum(
        datetime.fromisoformat(r["timestamp"]) < train_until for r in ledger_simulated
    )
    assert body["model_version"]
    live, draft = body["live"], body["draft"]
    assert live["scored"] == draft["scored"] == body["replayed"] - body["trained_on"]
    assert live["rule_hits"].get("amount_spike", 0) > 0
    assert "amount_spike" not in draft["rule_hits"]
    assert live["labelled"] == draft["labelled"] > 0
    assert live["fraud"] > 0 and live["precision"] is not None
    assert scoring_config_from_db(model=None).rules == tuple(rules_before)
    assert Transaction.objects.count() == count_before


def test_a_ledger_fed_only_frauds_is_judged_and_trained_as_a_retrain_would(
    api_client, ledger_simulated
):
    """Given a ledger whose only labels are frauds (chargebacks), payments
    without a label count as legitimate once older than label_maturity_days,
    as a retrain presumes: the classifier is trained, and precision, recall,
    average precision and ROC AUC are what the simulated truth gives (the
    unlabelled payments here are exactly the legitimate ones), not a precision
    near 1 over the labelled frauds alone. Payments younger than the maturity
    are pending, left out of the figures."""
    window = {
        "since": "2026-01-01T00:00:00Z",
        "train_until": TRAIN_UNTIL,
        "until": "2026-02-01T00:00:00Z",
        "label_maturity_days": 0,
    }

    def backtest(**changes) -> dict:
        response = api_client.post(
            "/api/backtest", {**window, **changes}, format="json"
        )
        assert response.status_code == 200, response.content
        return response.json()

    with_legit_labels = backtest()
    Label.objects.filter(is_fraud=False).delete()
    frauds_only = backtest()

    live = frauds_only["live"]
    assert live["labelled"] == live["fraud"] > 0
    assert live["presumed_legit"] == live["scored"] - live["labelled"]
    assert live["pending"] == 0
    figures = ("fraud", "precision", "recall", "average_precision", "roc_auc")
    assert {k: live[k] for k in figures} == {
        k: with_legit_labels["live"][k] for k in figures
    }
    flagged = sum(n for s, n in live["by_status"].items() if s != "legit")
    assert live["precision"] < 0.9 and flagged > live["fraud"]
    # The classifier learns from every training payment (too few frauds here
    # to fit it, 50 needed, but it counts the unlabelled ones as legitimate).
    assert frauds_only["classifier"] == with_legit_labels["classifier"]
    counts = re.search(
        r"(\d+) confirmed frauds and (\d+) legitimate", frauds_only["classifier"]
    )
    assert counts and int(counts[1]) > 0
    assert int(counts[1]) + int(counts[2]) == frauds_only["trained_on"]

    # Labels not yet mature: every unlabelled payment is pending, and nothing
    # in the training part is old enough for the classifier.
    young = backtest(label_maturity_days=3650)["live"]
    assert young["pending"] == young["scored"] - young["labelled"] > 0
    assert young["presumed_legit"] == 0
    assert young["labelled"] == young["fraud"] and young["recall"] == live["recall"]
    assert "roc_auc" not in young  # one class: no ranking figures


def test_bad_backtests_are_400s_naming_the_problem(api_client, settings):
    for index in range(3):
        transaction_stored(
            f"t-{index}", timestamp=datetime(2026, 1, 2 + index, tzinfo=UTC)
        )
    window = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-10T00:00:00Z"}

    def post(body):
        return api_client.post("/api/backtest", {**window, **body}, format="json")

    backwards = post({"train_until": "2026-01-20T00:00:00Z"})
    assert backwards.status_code == 400
    assert backwards.json() == {"train_until": ["Need since < train_until < until."]}
    # Without until, the answer says it was taken as now.
    unbounded = api_client.post(
        "/api/backtest",
        {"since": "2099-01-01T00:00:00Z", "train_until": "2099-01-02T00:00:00Z"},
        format="json",
    )
    assert unbounded.status_code == 400
    message = unbounded.json()["train_until"][0]
    assert message.startswith("Need since < train_until < until. until was not ")
    assert "give it to replay payments dated later" in message
    one_side = post({"train_until": "2026-01-09T00:00:00Z"})
    assert one_side.status_code == 400
    assert "both sides" in one_side.json()["train_until"][0]
    too_few = post({"train_until": "2026-01-03T00:00:00Z"})
    assert too_few.status_code == 400
    assert "Need at least" in too_few.json()["train_until"][0]
    for days in ("NaN", "Infinity", 1e308, 3651):
        odd = post({"train_until": "2026-01-03T00:00:00Z", "label_maturity_days": days})
        assert odd.status_code == 400, (days, odd.content)
        assert list(odd.json()) == ["label_maturity_days"], odd.json()
    bad_draft = post(
        {"train_until": "2026-01-03T00:00:00Z", "draft": {"rules": {"nope": {}}}}
    )
    assert bad_draft.status_code == 400
    assert "Unknown rule code(s) nope" in bad_draft.json()["draft"][0]
    settings.API_BACKTEST_MAX_ROWS = 2
    too_many = post({"train_until": "2026-01-03T00:00:00Z"})
    assert too_many.status_code == 400
    assert too_many.json()["detail"].startswith("3 transactions are between")
    assert post({}).json()["train_until"] == ["This field is required."]


def test_a_scoring_client_cannot_backtest(django_user_model):
    """A backtest reads the ledger: it takes a role that reads."""
    gateway = django_user_model.objects.create_user(username="gateway")
    gateway.groups.add(Group.objects.get(name=ROLE_SCORING_CLIENT))
    body = {"since": "2026-01-01T00:00:00Z", "train_until": TRAIN_UNTIL}
    assert _api(gateway).post("/api/backtest", body, format="json").status_code == 403
