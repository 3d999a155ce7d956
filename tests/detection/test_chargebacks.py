"""Chargebacks from Kafka label stored transactions: once each, nothing lost.

Against the real embedded broker and the SQLite test database, like the stream.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from kafka import KafkaConsumer, TopicPartition

from detection.chargebacks import ChargebackStream
from detection.kafka import consumer_create, producer_create
from detection.models import DeadLetter
from detection.scoring import scoring_config_current
from detection.services import dead_letters_redrive
from tests.detection.test_stream import (
    DEADLINE,
    IDLE,
    START,
    group_new,
    simulated,
    wait_until,
)
from tests.ledger import transaction_stored
from transactions.messages import MessageError, chargeback_message_parse
from transactions.models import Label, Transaction

pytestmark = [pytest.mark.kafka, pytest.mark.django_db(transaction=True)]


def _stored(transaction_id: str) -> Transaction:
    return transaction_stored(
        transaction_id,
        user_id="u-cb",
        amount="420.00",
        risk_score=0.2,
        status=Transaction.Status.LEGIT,
        reasons=[],
        reason_codes="",
    )


def _send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = producer_create(bootstrap=bootstrap)
    try:
        for value in values:
            # Keyed by transaction id, as a feed should be: one payment's
            # reports stay in order on one partition.
            try:
                key = str(json.loads(value)["transaction_id"]).encode()
            except (ValueError, KeyError, TypeError):
                key = None
            producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close(timeout=10)


def _reports_sent(bootstrap: str, topic: str, ids: list[str]) -> None:
    """Store a payment for each id and send a chargeback for each."""
    for transaction_id in ids:
        _stored(transaction_id)
    _send(bootstrap, topic, [json.dumps({"transaction_id": t}).encode() for t in ids])


def _run(bootstrap: str, topic: str, group: str | None = None):
    consumer = consumer_create(bootstrap=bootstrap, group_id=group or group_new())
    stream = ChargebackStream(consumer=consumer, topic=topic)
    return stream.run(stop_when_idle=IDLE)


def test_the_message_defaults_to_fraud_and_lists_every_field_error():
    """A chargeback needs only its transaction; bad fields are named together."""
    message = chargeback_message_parse({"transaction_id": "t-1", "extra": 1})
    assert message.is_fraud is True
    assert message.label_note() == "Chargeback"
    with pytest.raises(MessageError) as caught:
        chargeback_message_parse(
            {"is_fraud": "maybe", "dispute_id": "d" * 65, "note": ["x"]}
        )
    assert set(caught.value.errors) == {
        "transaction_id",
        "is_fraud",
        "dispute_id",
        "note",
    }


def test_chargebacks_label_once_and_bad_reports_become_dead_letters(
    kafka_bootstrap, kafka_topic
):
    """Given two stored payments, when their chargebacks arrive with an unknown
    payment's, a repeated dispute, garbage and a bad field, then each stored
    payment gets one chargeback label with the report in its note, and the three
    bad records are dead letters with their errors. Replaying the topic under a
    new group adds no label and no dead letter; once the unknown payment is
    stored, a redrive labels it."""
    first, second = _stored("t-cb-1"), _stored("t-cb-2")
    report = {"transaction_id": "t-cb-1", "dispute_id": "D-1", "reason_code": "10.4"}
    _send(
        kafka_bootstrap,
        kafka_topic,
        [
            json.dumps(report).encode(),
            json.dumps(report).encode(),  # the network sent it twice
            json.dumps({"transaction_id": "t-cb-2", "is_fraud": False}).encode(),
            json.dumps({"transaction_id": "t-cb-later"}).encode(),
            b"\xff not json",
            json.dumps({"transaction_id": "t-cb-1", "is_fraud": "yes!"}).encode(),
        ],
    )

    result = _run(kafka_bootstrap, kafka_topic)

    assert (result.records, result.created, result.duplicates) == (6, 2, 1)
    assert result.dead_letters == 3
    labels = {label.transaction_id: label for label in Label.objects.all()}
    assert set(labels) == {first.pk, second.pk}
    assert labels[first.pk].source == "chargeback"
    assert labels[first.pk].is_fraud is True
    assert labels[first.pk].note == "Chargeback D-1, reason code 10.4"
    assert labels[first.pk].reference == "D-1|t-cb-1|fraud"
    assert labels[second.pk].is_fraud is False
    assert labels[second.pk].reference.startswith(f"{kafka_topic}:")
    errors = sorted(DeadLetter.objects.values_list("error", flat=True))
    assert any("Not JSON" in error for error in errors)
    assert any('"is_fraud"' in error for error in errors)
    assert any("No stored transaction 't-cb-later'" in error for error in errors)

    replay = _run(kafka_bootstrap, kafka_topic)
    assert (replay.created, replay.duplicates) == (0, 3)
    assert Label.objects.count() == 2
    assert DeadLetter.objects.count() == 3

    _stored("t-cb-later")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.conf.settings.KAFKA_CHARGEBACKS_TOPIC", kafka_topic)
        redriven = dead_letters_redrive(
            letters=list(DeadLetter.objects.all()), config=scoring_config_current()
        )
    assert (redriven.labelled, redriven.still_invalid, redriven.unmatched) == (1, 2, 0)
    later = Label.objects.get(transaction__transaction_id="t-cb-later")
    assert later.source == "chargeback"
    resolved = DeadLetter.objects.exclude(resolved_at=None).get()
    assert "No stored transaction" in resolved.error
    assert resolved.resolution == "Chargeback labelled."


def test_a_report_the_database_refuses_is_a_dead_letter_not_a_halt(
    kafka_bootstrap, kafka_topic, monkeypatch
):
    """Given a batch of chargebacks in which the database refuses one report's
    label (a DataError: the same every time), the consumer does not retry it
    until it gives up: that report becomes a dead letter with the refusal and
    its position, the others label their payments, and the offsets are
    committed (the same group reads nothing again)."""
    from django.db import DataError

    from detection import chargebacks

    ids = [f"t-cb-r{n}" for n in range(5)]
    _reports_sent(kafka_bootstrap, kafka_topic, ids)
    real, refused = chargebacks.transaction_label, []

    def refusing(*, record, **kwargs):
        if record.transaction_id == "t-cb-r3":
            refused.append(record.transaction_id)
            raise DataError("value too long for type varchar(64)")
        return real(record=record, **kwargs)

    monkeypatch.setattr(chargebacks, "transaction_label", refusing)
    group = group_new()
    consumer = consumer_create(bootstrap=kafka_bootstrap, group_id=group)
    stream = ChargebackStream(
        consumer=consumer, topic=kafka_topic, retry_limit=2, retry_backoff_seconds=0.01
    )
    result = stream.run(stop_when_idle=IDLE)

    assert refused
    assert (result.records, result.created, result.dead_letters) == (5, 4, 1)
    assert result.db_retries == 0
    assert set(
        Label.objects.values_list("transaction__transaction_id", flat=True)
    ) == set(ids) - {"t-cb-r3"}
    letter = DeadLetter.objects.get()
    assert json.loads(bytes(letter.raw_value)) == {"transaction_id": "t-cb-r3"}
    assert letter.error == (
        "database refused the record: value too long for type varchar(64)"
    )
    assert letter.topic == kafka_topic and letter.offset is not None
    assert _run(kafka_bootstrap, kafka_topic, group=group).records == 0


def test_a_database_refusing_every_label_stops_the_consumer_losing_nothing(
    kafka_bootstrap, kafka_topic, monkeypatch
):
    """Given a database that refuses every label (a fault of the database, not
    of the reports), the consumer stops loudly at STREAM_DB_REFUSED_IN_A_ROW
    refusals in a row: no dead letter stored, no offset committed; mended, the
    same group labels every payment. One report refused among others stays a
    dead letter (the test above)."""
    from django.db import DataError

    from detection import chargebacks
    from detection.retrying import StreamDatabaseError

    ids = [f"t-cb-all{n}" for n in range(6)]
    _reports_sent(kafka_bootstrap, kafka_topic, ids)
    group = group_new()
    with monkeypatch.context() as patch:

        def refusing(**kwargs):
            raise DataError("value too long for type varchar(64)")

        patch.setattr(chargebacks, "transaction_label", refusing)
        consumer = consumer_create(bootstrap=kafka_bootstrap, group_id=group)
        # One batch of all six (up to 5 s to gather them), so that the
        # outcome does not depend on how the polls split them.
        stream = ChargebackStream(
            consumer=consumer, topic=kafka_topic, refused_in_a_row=3,
            batch_max_records=6, batch_max_wait_ms=5000,
        )  # fmt: skip
        with pytest.raises(StreamDatabaseError, match="refused 3 records in a row"):
            stream.run(stop_when_idle=IDLE)

    assert stream.report.records == 0
    assert DeadLetter.objects.count() == 0 and Label.objects.count() == 0
    result = _run(kafka_bootstrap, kafka_topic, group=group)
    assert (result.records, result.created, result.dead_letters) == (6, 6, 0)
    assert set(
        Label.objects.values_list("transaction__transaction_id", flat=True)
    ) == set(ids)


def test_a_reopened_dispute_labels_at_every_stage_and_replays_label_nothing(
    kafka_bootstrap, kafka_topic
):
    """Given a dispute that goes fraud, then not fraud, then fraud again (a
    pre-arbitration), each report with its reported_at, then the payment's
    latest label is fraud; and a report without a Kafka timestamp replayed
    under a new group labels nothing twice."""
    record = _stored("t-cb-9")
    stages = [
        {"is_fraud": True, "reported_at": "2026-11-01T09:00:00Z"},
        {"is_fraud": False, "reported_at": "2026-11-10T09:00:00Z"},
        {"is_fraud": True, "reported_at": "2026-11-20T09:00:00Z"},
    ]
    _send(
        kafka_bootstrap,
        kafka_topic,
        [
            json.dumps(
                {"transaction_id": "t-cb-9", "dispute_id": "D-9", **stage}
            ).encode()
            for stage in stages
        ],
    )
    producer = producer_create(bootstrap=kafka_bootstrap)
    try:
        # A record stamped with no usable time (-1: Kafka's "none").
        producer.send(
            kafka_topic,
            key=b"t-cb-9",
            value=json.dumps({"transaction_id": "t-cb-9"}).encode(),
            timestamp_ms=-1,
        ).get(timeout=10)
    finally:
        producer.close(timeout=10)

    assert _run(kafka_bootstrap, kafka_topic).created == 4
    labels = list(Label.objects.filter(transaction=record).order_by("id"))
    assert [label.is_fraud for label in labels] == [True, False, True, True]
    replay = _run(kafka_bootstrap, kafka_topic)
    assert (replay.created, replay.duplicates) == (0, 4)
    assert Label.objects.filter(transaction=record).count() == 4


def test_the_producer_sends_a_chargeback_for_each_simulated_fraud(
    kafka_bootstrap, kafka_topic_factory, settings
):
    """Given --chargebacks-after, when the simulator sends N payments, then the
    chargeback topic holds one report per payment marked is_fraud, keyed by its
    transaction id; once the payments are scored, consume_chargebacks labels
    exactly those payments as fraud."""
    settings.KAFKA_BROKER = kafka_bootstrap
    topic, chargebacks = kafka_topic_factory(), kafka_topic_factory()
    settings.KAFKA_CHARGEBACKS_TOPIC = chargebacks
    out = StringIO()
    call_command(
        "produce_transactions",
        "--topic", topic, "--count", "3000", "--seed", "5", "--users", "80",
        "--start", START, "--chargebacks-after", "0.2",
        stdout=out,
    )  # fmt: skip
    frauds = {
        m["transaction_id"] for m in simulated(3000, seed=5, users=80) if m["is_fraud"]
    }
    assert frauds, "the simulator made no fraud in 3,000 payments"
    assert f"Sent {len(frauds):,} chargebacks" in out.getvalue()

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    try:
        consumer.assign(
            [
                TopicPartition(chargebacks, p)
                for p in consumer.partitions_for_topic(chargebacks)
            ]
        )
        seen: dict[str, bytes] = {}

        def all_read() -> bool:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    seen[json.loads(record.value)["transaction_id"]] = record.key
            return len(seen) >= len(frauds)

        wait_until(all_read, timeout=DEADLINE, what="the simulated chargebacks")
    finally:
        consumer.close()
    assert set(seen) == frauds
    assert all(key == tid.encode() for tid, key in seen.items())

    # Then the two consumer commands: payments scored, then their chargebacks.
    call_command(
        "consume_transactions", "--topic", topic, "--group", group_new(),
        "--stop-when-idle", str(IDLE), "--no-push", stdout=out,
    )  # fmt: skip
    call_command(
        "consume_chargebacks", "--group", group_new(),
        "--stop-when-idle", str(IDLE), stdout=out,
    )  # fmt: skip
    assert f"{len(frauds):,} labelled, 0 already labelled, 0 dead" in out.getvalue()
    labelled = Label.objects.filter(source="chargeback", is_fraud=True)
    assert set(labelled.values_list("transaction__transaction_id", flat=True)) == (
        frauds
    )


def test_a_disputes_closing_is_a_new_label_and_its_id_is_per_payment(
    kafka_bootstrap, kafka_topic
):
    """Given a dispute opened as fraud, when it is closed as not fraud, then the
    closing is the latest label; and the same dispute id on another payment
    labels that payment too (the network's ids are not unique across payments)."""
    _stored("t-cb-a"), _stored("t-cb-b")
    opened = {"transaction_id": "t-cb-a", "dispute_id": "D-9"}
    _send(
        kafka_bootstrap,
        kafka_topic,
        [
            json.dumps(opened).encode(),
            json.dumps({**opened, "is_fraud": False}).encode(),
            json.dumps({**opened, "transaction_id": "t-cb-b"}).encode(),
        ],
    )
    result = _run(kafka_bootstrap, kafka_topic)
    assert (result.created, result.duplicates, result.dead_letters) == (3, 0, 0)
    latest = Label.objects.filter(transaction__transaction_id="t-cb-a").latest_first()
    assert [label.is_fraud for label in latest] == [False, True]
    assert Label.objects.filter(transaction__transaction_id="t-cb-b").count() == 1


def test_a_reference_longer_than_its_column_is_stored_as_its_start_and_digest():
    """A 64-character dispute id and transaction id with a report time make a
    163-character reference; PostgreSQL refused it (the column holds 160) and
    the consumer retried the batch for ever. It is stored, and stays distinct
    per outcome and report time; short references are kept as they are."""
    from datetime import UTC, datetime

    from detection.chargebacks import chargeback_reference, chargebacks_apply
    from transactions.messages import ChargebackMessage

    long_id = "t" * 64
    _stored(long_id)
    limit = Label._meta.get_field("reference").max_length

    def report(is_fraud: bool, day: int) -> ChargebackMessage:
        return ChargebackMessage(
            transaction_id=long_id,
            is_fraud=is_fraud,
            dispute_id="D" * 64,
            reported_at=datetime(2026, 11, day, 9, tzinfo=UTC),
        )

    reports = [report(True, 1), report(False, 10), report(True, 20)]
    references = [
        chargeback_reference(r, topic="cb", partition=0, offset=n, value=b"")
        for n, r in enumerate(reports)
    ]
    assert all(len(reference) <= limit for reference in references)
    assert len(set(references)) == 3
    # Readable from its start: the dispute id, then the payment's.
    assert references[0].startswith("D" * 64 + "|" + "t" * 60)
    result = chargebacks_apply(reports=list(zip(reports, references, strict=True)))
    assert result.labelled == 3
    again = chargebacks_apply(reports=list(zip(reports, references, strict=True)))
    assert again.already_stored == 3
    short = ChargebackMessage(transaction_id="t-1", dispute_id="D-1")
    assert (
        chargeback_reference(short, topic="cb", partition=0, offset=1, value=b"")
        == "D-1|t-1|fraud"
    )


def test_a_disputes_stage_arriving_after_a_later_one_does_not_become_latest():
    """Given a dispute's closing (not fraud, reported on the 10th) applied,
    its opening (fraud, reported on the 1st) arriving after it, in a batch or
    redriven from the dead letters, labels nothing and is settled: the latest
    label stays the closing. A later stage (fraud again, the 20th) still
    applies."""
    from datetime import UTC, datetime

    from detection.chargebacks import (
        SUPERSEDED,
        chargeback_reference,
        chargebacks_apply,
        chargebacks_redrive,
    )
    from transactions.messages import ChargebackMessage

    record = _stored("t-cb-late")

    def report(is_fraud: bool, day: int):
        message = ChargebackMessage(
            transaction_id="t-cb-late",
            is_fraud=is_fraud,
            dispute_id="D-late",
            reported_at=datetime(2026, 11, day, 9, tzinfo=UTC),
        )
        reference = chargeback_reference(
            message, topic="cb", partition=0, offset=day, value=b""
        )
        return message, reference

    assert chargebacks_apply(reports=[report(False, 10)]).labelled == 1
    late = chargebacks_apply(reports=[report(True, 1)])
    assert late.outcomes == [SUPERSEDED] and late.unapplied == []
    latest = Label.objects.filter(transaction=record).latest_first()
    assert [label.is_fraud for label in latest] == [False]
    assert latest[0].reported_at == datetime(2026, 11, 10, 9, tzinfo=UTC)

    letter = DeadLetter.objects.create(
        raw_value=json.dumps(
            {
                "transaction_id": "t-cb-late",
                "dispute_id": "D-late",
                "reported_at": "2026-11-01T09:00:00Z",
            }
        ).encode(),
        error="No stored transaction 't-cb-late'",
        topic="chargebacks",
        partition=0,
        offset=1,
    )
    redriven = chargebacks_redrive(letters=[letter])
    assert redriven.outcomes == [SUPERSEDED]
    assert letter.resolved_at is not None
    assert Label.objects.filter(transaction=record).count() == 1

    assert chargebacks_apply(reports=[report(True, 20)]).labelled == 1
    latest = Label.objects.filter(transaction=record).latest_first()
    assert [label.is_fraud for label in latest] == [True, False]
