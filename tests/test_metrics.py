"""GET /metrics: Prometheus text from the database (and the real broker's lag),
behind a bearer token or a staff sign-in."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from detection.kafka import producer_create, transactions_produce
from detection.models import DeadLetter, ListEntry
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from tests.detection.test_stream import simulated
from transactions.messages import transaction_message_parse

pytestmark = pytest.mark.django_db


def _score(*payloads: dict) -> None:
    transaction_batch_score_record(
        messages=[transaction_message_parse(p) for p in payloads],
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )


def _value(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in:\n{text}"
    return float(found.group(1))


def test_metrics_need_the_token_or_a_staff_sign_in(settings, staff_user):
    settings.METRICS_TOKEN = "scrape-me"
    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == "Bearer"
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    assert wrong.status_code == 401
    assert Client().get(
        "/metrics", HTTP_AUTHORIZATION="Bearer scrape-me"
    ).status_code == (200)
    staff = Client()
    staff.force_login(staff_user)
    assert staff.get("/metrics").status_code == 200


def test_metrics_report_verdicts_reasons_letters_lists_and_freshness(settings):
    settings.METRICS_TOKEN = "scrape-me"
    settings.KAFKA_BROKER = ""
    _score(
        {"transaction_id": "m1", "user_id": "m1", "amount": "25000.00"},
        {"transaction_id": "m2", "user_id": "m2", "amount": "12.00"},
    )
    DeadLetter.objects.create(raw_value=b"x", error="not JSON", topic="t")
    ListEntry.objects.create(kind="card", value="c", action="block", note="n")
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert _value(text, 'fraudsite_verdicts_total{status="legit"}') == 1
    flagged = _value(text, 'fraudsite_verdicts_total{status="suspicious"}') + _value(
        text, 'fraudsite_verdicts_total{status="fraud"}'
    )
    assert flagged == 1
    assert _value(text, 'fraudsite_reasons_fired_total{code="huge_amount"}') == 1
    assert _value(text, "fraudsite_dead_letters_unresolved") == 1
    assert _value(text, 'fraudsite_list_entries{action="block",kind="card"}') == 1
    assert _value(text, 'fraudsite_alert_deliveries{state="pending"}') == 0
    assert _value(text, "fraudsite_last_verdict_timestamp_seconds") > 1.7e9
    assert "fraudsite_consumer_lag_records" not in text  # no broker configured


@pytest.mark.kafka
def test_metrics_report_the_consumer_groups_lag(
    settings, staff_user, kafka_bootstrap, kafka_topic
):
    """Records on the topic that the group has not committed are its lag.

    One record per produce request: the embedded Tansu broker reports a
    partition's end as one past the start of its last record batch (seen here:
    5 records sent as one batch read as an end offset of 1), so batched records
    would read low there; Apache Kafka reports the true end.
    """
    producer = producer_create(bootstrap=kafka_bootstrap)
    try:
        for record in simulated(7, seed=3, users=5):
            transactions_produce(producer=producer, topic=kafka_topic, records=[record])
            producer.flush()
    finally:
        producer.close(timeout=10)
    settings.KAFKA_BROKER = kafka_bootstrap
    settings.KAFKA_TRANSACTIONS_TOPIC = kafka_topic
    settings.KAFKA_CONSUMER_GROUP = "metrics-test-group"
    staff = Client()
    staff.force_login(staff_user)
    text = staff.get("/metrics").content.decode()
    name = (
        "fraudsite_consumer_lag_records"
        f'{{group="metrics-test-group",topic="{kafka_topic}"}}'
    )
    assert _value(text, name) == 7
