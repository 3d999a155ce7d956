"""The Kafka stream: produce, consume in micro-batches, replay, poison, DB errors.

Everything runs against the real embedded broker and the SQLite test database; the
consumers here run in the test process (the subprocess tests, crash and scale-out,
are in test_stream_processes.py). Waits poll with deadlines; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from itertools import islice

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from kafka import KafkaConsumer, TopicPartition

from detection.kafka import (
    NETWORK_SLOW_STEP_SECONDS,
    consumer_create,
    network_client,
    producer_create,
    transactions_produce,
)
from detection.models import AlertDelivery, AlertWebhook, DeadLetter, Rule, UserProfile
from detection.retrying import StreamDatabaseError
from detection.scoring import ScoringConfigProvider
from detection.simulator import simulate_stream
from detection.stream import StreamReport, TransactionStream
from tests.ledger import transaction_stored
from transactions.models import Transaction

pytestmark = [
    pytest.mark.kafka,
    # Consumers commit for real (and subprocesses share the file), so no test
    # transaction may wrap them (the root conftest re-seeds the rules after flushes).
    pytest.mark.django_db(transaction=True),
]

START = "2026-05-01T00:00:00Z"
DEADLINE = 60.0
IDLE = 1.0


def simulated(count: int, *, seed: int, users: int = 200) -> list[dict]:
    """Return `count` simulated messages (what produce_transactions sends)."""
    start = datetime.fromisoformat(START)
    return list(islice(simulate_stream(users=users, seed=seed, start=start), count))


def produce(bootstrap: str, topic: str, records: Iterable[dict | bytes]) -> int:
    """Send records to the topic keyed by user_id; return how many were sent."""
    producer = producer_create(bootstrap=bootstrap)
    try:
        return transactions_produce(
            producer=producer, topic=topic, records=records
        ).sent
    finally:
        producer.close(timeout=10)


def group_new() -> str:
    """Return a consumer group id no other test uses."""
    return f"test-group-{uuid.uuid4().hex[:10]}"


def stream_build(bootstrap: str, topic: str, *, group: str | None = None, **kwargs):
    """Return a TransactionStream on a fresh (or the given) consumer group."""
    consumer = consumer_create(bootstrap=bootstrap, group_id=group or group_new())
    return TransactionStream(consumer=consumer, topic=topic, **kwargs)


def stream_run(bootstrap: str, topic: str, **kwargs) -> StreamReport:
    """Consume the topic in this process until caught up and idle."""
    return stream_build(bootstrap, topic, **kwargs).run(stop_when_idle=IDLE)


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def batch_next(stream: TransactionStream, *, what: str) -> list:
    """Return the stream's next non-empty batch, polling back to back.

    Not `wait_until`: its pause between attempts would leave the consumer
    outside poll(), and kafka-python throws away a group join that completes
    then (fraudsite/embedded/kafka_server.py), so under load the join could keep
    failing.
    Each poll itself waits up to the batch's max wait.
    """
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        batch = stream.batch_poll()
        if batch:
            return batch
    pytest.fail(f"timed out after {DEADLINE:.0f} s waiting for {what}")


def profiles_snapshot() -> dict[str, dict]:
    """Return every user's stored state, without bookkeeping columns."""
    snapshot = {}
    for row in UserProfile.objects.values():
        del row["id"], row["updated_at"]
        snapshot[row.pop("user_id")] = row
    return snapshot


def verdicts_snapshot() -> dict[str, tuple]:
    """Return each stored transaction's verdict, keyed by transaction id."""
    return {
        row[0]: row[1:]
        for row in Transaction.objects.values_list(
            "transaction_id", "status", "risk_score", "reason_codes", "model_score"
        )
    }


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Return the group's committed offset per partition (None when absent)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {
            p: consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)
        }
    finally:
        consumer.close()


def test_produced_transactions_are_scored_once_each(
    kafka_bootstrap, kafka_topic, settings
):
    """Given N simulated messages produced by the command, when the consumer
    command drains the topic, then the ledger holds exactly those N ids, each with
    a verdict, its Kafka timestamp as received_at, and stored after receipt; an
    alert webhook has a delivery queued for each flagged one."""
    settings.KAFKA_BROKER = kafka_bootstrap
    AlertWebhook.objects.create(
        name="cases", url="https://cases.example/hook", min_status="suspicious"
    )
    # Amounts from 100 are "huge" here, so that some of the 400 are flagged.
    Rule.objects.filter(code="huge_amount").update(params={"threshold": 100.0})
    out = StringIO()
    call_command(
        "produce_transactions",
        "--topic", kafka_topic, "--count", "400", "--seed", "7",
        "--users", "60", "--start", START,
        stdout=out,
    )  # fmt: skip
    assert "Sent 400 messages" in out.getvalue()

    before = datetime.now(UTC)
    call_command(
        "consume_transactions",
        "--topic", kafka_topic, "--group", group_new(),
        "--stop-when-idle", str(IDLE), "--no-push",
        stdout=out,
    )  # fmt: skip

    expected = {m["transaction_id"] for m in simulated(400, seed=7, users=60)}
    stored = list(Transaction.objects.all())
    assert {t.transaction_id for t in stored} == expected
    assert len(stored) == 400
    assert "400 scored" in out.getvalue()
    for txn in stored:
        assert txn.status in {"legit", "suspicious", "fraud"}
        assert 0.0 <= txn.risk_score <= 1.0
        assert txn.ingest_source == "stream"
        # received_at is the broker's record time (this test's run), not the
        # simulated event time in May 2026.
        assert before - timedelta(minutes=5) < txn.received_at <= txn.scored_at
    users = {m["user_id"] for m in simulated(400, seed=7, users=60)}
    assert set(UserProfile.objects.values_list("user_id", flat=True)) == users
    assert sum(UserProfile.objects.values_list("txn_count", flat=True)) == 400
    flagged = {t.transaction_id for t in stored if t.status != "legit"}
    assert flagged
    assert set(AlertDelivery.objects.values_list("transaction_id", flat=True)) == (
        flagged
    )


def test_replaying_the_topic_changes_nothing(kafka_bootstrap, kafka_topic):
    """Given a consumed topic, when a new consumer group replays it from the start,
    then no row is added and no user's state or verdict changes."""
    records = simulated(600, seed=11, users=80)
    produce(kafka_bootstrap, kafka_topic, records)
    first = stream_run(kafka_bootstrap, kafka_topic)
    assert first.created == 600
    profiles, verdicts = profiles_snapshot(), verdicts_snapshot()

    replay = stream_run(kafka_bootstrap, kafka_topic)

    assert (replay.records, replay.created, replay.duplicates) == (600, 0, 600)
    assert Transaction.objects.count() == 600
    assert verdicts_snapshot() == verdicts
    assert profiles_snapshot() == profiles


def test_poison_records_become_dead_letters_and_good_ones_are_scored(
    kafka_bootstrap, kafka_topic_factory
):
    """Given good messages mixed with garbage bytes, JSON with bad fields and huge
    strings, when consumed, then every good message is scored, every bad record is
    a DeadLetter with its raw value, error and position (and is copied to the
    dead-letter topic), and the consumer keeps going."""
    topic, dead_topic = kafka_topic_factory(), kafka_topic_factory()
    good = simulated(300, seed=13, users=40)
    template = dict(good[0], transaction_id="poison")
    poison: list[bytes] = [
        b"\xff\xfe\x00garbage",
        b"not json at all",
        b"[1, 2, 3]",
        b"{",
        b"[" * 100_000,
        json.dumps(dict(template, amount=-5)).encode(),
        json.dumps(dict(template, amount="12.345")).encode(),
        json.dumps(dict(template, user_id="")).encode(),
        json.dumps(dict(template, latitude=123.0)).encode(),
        json.dumps(dict(template, channel="carrier-pigeon")).encode(),
        json.dumps(dict(template, timestamp="yesterday")).encode(),
        json.dumps(dict(template, user_id="u" * 200_000)).encode(),
        json.dumps(dict(template, location="L" * 500_000)).encode(),
    ]
    mixed: list[dict | bytes] = []
    for index, record in enumerate(good):
        mixed.append(record)
        if index % 23 == 0 and poison:
            mixed.append(poison.pop())
    mixed.extend(poison)
    poison_sent = [r for r in mixed if isinstance(r, bytes)]
    produce(kafka_bootstrap, topic, mixed)

    report = stream_run(
        kafka_bootstrap,
        topic,
        dead_letter_producer=producer_create(bootstrap=kafka_bootstrap),
        dead_letter_topic=dead_topic,
    )

    assert report.created == 300
    assert set(Transaction.objects.values_list("transaction_id", flat=True)) == {
        m["transaction_id"] for m in good
    }
    letters = list(DeadLetter.objects.all())
    assert sorted(bytes(d.raw_value) for d in letters) == sorted(poison_sent)
    for letter in letters:
        assert letter.error
        assert letter.topic == topic and letter.partition is not None
        assert letter.offset is not None and letter.received_at is not None
        assert len(letter.raw_preview) <= 2000
    errors = " ".join(d.error for d in letters)
    assert "Not JSON" in errors and "amount" in errors and "latitude" in errors
    assert "no more than 64 characters" in errors

    copies = dead_letter_topic_read(kafka_bootstrap, dead_topic, len(poison_sent))
    assert sorted(copies) == sorted(poison_sent)


def test_a_dead_letter_topic_that_fails_never_stops_scoring(
    kafka_bootstrap, kafka_topic, caplog
):
    """Given a dead-letter topic the producer refuses (kafka-python raises a
    ValueError for a name Kafka cannot have), the bad record still lands in the
    table, the good ones are scored and the offsets are committed: the batch
    is not replayed for ever."""
    good = simulated(20, seed=29, users=5)
    produce(kafka_bootstrap, kafka_topic, [*good, b"not json"])
    group = group_new()
    producer = producer_create(bootstrap=kafka_bootstrap)
    try:
        report = stream_run(
            kafka_bootstrap,
            kafka_topic,
            group=group,
            dead_letter_producer=producer,
            dead_letter_topic="dead letters!",
        )
    finally:
        producer.close(timeout=10)
    assert (report.created, report.dead_letters) == (20, 1)
    assert DeadLetter.objects.count() == 1
    assert "could not forward 1 dead letters" in caplog.text
    again = stream_run(kafka_bootstrap, kafka_topic, group=group)
    assert again.records == 0  # committed: nothing comes back


def test_a_database_error_while_checking_reused_ids_is_retried(
    kafka_bootstrap, kafka_topic, monkeypatch
):
    """Given a batch with replayed ids, a database error while checking whether
    they reuse a stored id for another payment is retried like the batch's own
    writes (a failover), not a crash of the consumer."""
    from django.db import OperationalError

    from detection.services import recording

    good = simulated(30, seed=31, users=5)
    produce(kafka_bootstrap, kafka_topic, good)
    group = group_new()
    assert stream_run(kafka_bootstrap, kafka_topic, group=group).created == 30
    produce(kafka_bootstrap, kafka_topic, [good[0], dict(good[1], amount="1.00")])
    real, failures = recording.transaction_id_conflicts, []

    def fails_once(messages):
        if not failures:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return real(messages)

    monkeypatch.setattr("detection.stream.transaction_id_conflicts", fails_once)
    report = stream_run(
        kafka_bootstrap, kafka_topic, group=group, retry_backoff_seconds=0.01
    )
    assert (report.db_retries, report.duplicates, report.dead_letters) == (1, 1, 1)
    assert "ids must not be reused" in DeadLetter.objects.get().error


def test_an_id_reused_for_another_payment_is_a_dead_letter(
    kafka_bootstrap, kafka_topic
):
    """Given stored payments, a record that reuses one's id for another amount or
    card (in a later batch, or twice in one) becomes a dead letter that says so,
    with its position, instead of being dropped as "already stored"; an exact
    replay is still skipped silently, and stays out of the dead letters."""
    good = simulated(50, seed=17, users=10)
    produce(kafka_bootstrap, kafka_topic, good)
    group = group_new()
    assert stream_run(kafka_bootstrap, kafka_topic, group=group).created == 50
    stored = good[0]
    reused = [
        dict(stored, amount="99999.00"),
        dict(stored, user_id="another-card"),
        dict(good[1]),  # an exact replay
        {**good[2], "transaction_id": "new-1"},
        {**good[3], "transaction_id": "new-1", "amount": "1.00"},  # same batch
    ]
    produce(kafka_bootstrap, kafka_topic, reused)

    report = stream_run(kafka_bootstrap, kafka_topic, group=group)

    # Each record counted once: 1 scored, 1 exact replay, 3 dead letters.
    assert (
        report.records,
        report.created,
        report.duplicates,
        report.dead_letters,
    ) == (5, 1, 1, 3)
    assert Transaction.objects.get(transaction_id=stored["transaction_id"]).amount == (
        Decimal(stored["amount"])
    )
    letters = DeadLetter.objects.order_by("offset")
    assert len(letters) == 3
    assert all("ids must not be reused" in letter.error for letter in letters)
    assert "this one: amount 99999.00" in " ".join(d.error for d in letters)
    assert "this one: user_id another-card" in " ".join(d.error for d in letters)
    assert all(letter.offset is not None for letter in letters)


def dead_letter_topic_read(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """Return the values on the dead-letter topic, waiting for `count` of them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
        ]
        consumer.assign(partitions)
        values: list[bytes] = []

        def more() -> bool:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
            return len(values) >= count

        wait_until(more, timeout=DEADLINE, what=f"{count} dead-letter copies")
        return values
    finally:
        consumer.close()


def table_rename(path: str, old: str, new: str, *, if_present: bool = False) -> None:
    """Rename a table through a separate connection (the outage and its repair);
    `if_present`: only if `old` still exists (the clean-up after a failure)."""
    if connection.vendor == "sqlite":
        with sqlite3.connect(path, timeout=30) as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [old]
            ).fetchone()
            if found or not if_present:
                db.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')
        return
    import psycopg

    from tests.db import subprocess_database_url

    url = subprocess_database_url().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as db:
        found = db.execute("SELECT to_regclass(%s)", [f'"{old}"']).fetchone()[0]
        if found or not if_present:
            db.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')


def test_database_errors_are_retried_without_committing_offsets(
    kafka_bootstrap, kafka_topic
):
    """Given a database that fails, when a batch is stored, then it is retried with
    backoff and stored once the database is back; when it keeps failing past the
    limit, the stream gives up loudly and commits no offsets, so a later consumer
    reads the whole batch again and scores it. The later consumer is in a new
    group, which starts where the first group's uncommitted position does (the
    topic's start); restarts within one group are tested by the SIGKILL test of
    test_stream_processes. Both consumers poll back to back (batch_next): with
    pauses between polls (wait_until), kafka-python throws away joins that
    complete in a pause (fraudsite.embedded.kafka_server). That is the likely
    cause of what made this test's later consumer wait 7 to 40 s, once over 180 s in
    the same group and once 60 s in a new one; polling back to back, six runs
    in the same group took 8 to 14 s (2026-12-01)."""
    produce(kafka_bootstrap, kafka_topic, simulated(200, seed=17, users=30))
    path = connection.settings_dict["NAME"]
    table, hidden = Transaction._meta.db_table, "stream_test_outage"
    group = group_new()

    stream = stream_build(
        kafka_bootstrap, kafka_topic, group=group, retry_limit=2,
        retry_backoff_seconds=0.01,
    )  # fmt: skip
    try:
        stream.subscribe()
        records = batch_next(stream, what="a first batch")
        table_rename(path, table, hidden)
        with pytest.raises(StreamDatabaseError, match="giving up"):
            stream.batch_process(records)
    finally:
        table_rename(path, hidden, table, if_present=True)
        stream.close()
    assert stream.report.db_retries == 3
    assert Transaction.objects.count() == 0
    assert set(committed_offsets(kafka_bootstrap, group, kafka_topic).values()) <= {
        None
    }

    later = group_new()
    stream = stream_build(
        kafka_bootstrap, kafka_topic, group=later, retry_backoff_seconds=0.05
    )
    repair = threading.Thread(
        target=lambda: (
            wait_until(
                lambda: stream.report.db_retries, timeout=DEADLINE, what="a retry"
            ),
            table_rename(path, hidden, table),
        )
    )
    try:
        stream.subscribe()
        records = batch_next(stream, what="the batch again")
        table_rename(path, table, hidden)
        repair.start()
        recorded = stream.batch_process(records)
    finally:
        if repair.is_alive():
            repair.join(DEADLINE)
        # Whatever failed, later tests must find the table where it belongs.
        table_rename(path, hidden, table, if_present=True)
        stream.close()
    assert stream.report.db_retries >= 1
    assert len(recorded.created) == len(records)
    assert Transaction.objects.count() == len(records)
    offsets = committed_offsets(kafka_bootstrap, later, kafka_topic)
    assert sum(offset or 0 for offset in offsets.values()) == len(records)


def record_at(bootstrap: str, topic: str, partition: int, offset: int) -> bytes:
    """Return the value of the record at this position of the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        found = wait_until(
            lambda: consumer.poll(timeout_ms=200).get(tp), timeout=DEADLINE,
            what=f"the record at {topic}[{partition}]@{offset}",
        )  # fmt: skip
        return found[0].value
    finally:
        consumer.close()


@contextmanager
def ledger_refusing(how: str, transaction_id: str | None, monkeypatch):
    """Make the database refuse the ledger row of one transaction id (None:
    every row), the way a value a column cannot hold would: with a SQLite
    trigger (RAISE(ABORT) is an IntegrityError in Django's backend), or a
    DataError from the row insert of the score-and-record service (what
    PostgreSQL raises for a string too long for its varchar). Yield the list of
    errors raised."""
    from django.db import DataError, IntegrityError

    from detection.services import recording

    raised: list[Exception] = []
    if how == "data error":
        real = recording.transactions_record

        def refusing(*, rows):
            if any(transaction_id in (None, row["transaction_id"]) for row in rows):
                raised.append(DataError("value too long for type varchar(64)"))
                raise raised[-1]
            return real(rows=rows)

        monkeypatch.setattr(recording, "transactions_record", refusing)
        yield raised
        return
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite trigger")
    table = Transaction._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TRIGGER stream_test_refuse BEFORE INSERT ON "{table}" '
            + (
                ""
                if transaction_id is None
                else f"WHEN NEW.transaction_id = '{transaction_id}' "
            )
            + "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
        )
    real = recording.transactions_record

    def watching(*, rows):
        try:
            return real(rows=rows)
        except IntegrityError as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(recording, "transactions_record", watching)
    try:
        yield raised
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS stream_test_refuse")


@pytest.mark.parametrize("how", ["trigger", "data error"])
def test_a_record_the_database_refuses_is_a_dead_letter_not_a_halt(
    kafka_bootstrap, kafka_topic_factory, monkeypatch, how
):
    """Given a batch in which the database refuses one record's row (a value a
    column cannot hold, a constraint the validation missed: the same error
    every time), the stream does not retry it like an outage and stop for ever:
    it stores the batch in halves, in order, until the record is alone; that
    record becomes a dead letter with the refusal, its raw value and position
    (and is copied to the dead-letter topic), every other record is scored,
    each user's state holds exactly those, and the offsets are committed."""
    topic, dead_topic = kafka_topic_factory(), kafka_topic_factory()
    good = simulated(60, seed=43, users=6)
    bad = good[37]["transaction_id"]
    produce(kafka_bootstrap, topic, good)
    group = group_new()

    with ledger_refusing(how, bad, monkeypatch) as raised:
        report = stream_run(
            kafka_bootstrap, topic, group=group, retry_limit=2,
            retry_backoff_seconds=0.01,
            dead_letter_producer=producer_create(bootstrap=kafka_bootstrap),
            dead_letter_topic=dead_topic,
        )  # fmt: skip

    assert raised, "the database refused nothing"
    names = {type(exc).__name__ for exc in raised}
    assert names == {"IntegrityError" if how == "trigger" else "DataError"}
    assert (report.records, report.created, report.dead_letters) == (60, 59, 1)
    # A refusal is not an outage: nothing was retried with backoff.
    assert report.db_retries == 0
    stored = verdicts_snapshot()
    assert set(stored) == {m["transaction_id"] for m in good} - {bad}
    assert all(
        status in {"legit", "suspicious", "fraud"} for status, *_ in stored.values()
    )
    assert sum(UserProfile.objects.values_list("txn_count", flat=True)) == 59
    letter = DeadLetter.objects.get()
    assert json.loads(bytes(letter.raw_value))["transaction_id"] == bad
    assert letter.error.startswith("database refused the record: ")
    assert ("refused by a test trigger" if how == "trigger" else "too long") in (
        letter.error
    )
    assert letter.topic == topic and letter.received_at is not None
    assert record_at(kafka_bootstrap, topic, letter.partition, letter.offset) == (
        bytes(letter.raw_value)
    )
    assert dead_letter_topic_read(kafka_bootstrap, dead_topic, 1) == [
        bytes(letter.raw_value)
    ]
    offsets = committed_offsets(kafka_bootstrap, group, topic)
    assert sum(offset or 0 for offset in offsets.values()) == 60


@pytest.mark.parametrize("how", ["trigger", "data error"])
def test_a_database_refusing_every_record_stops_the_stream_losing_nothing(
    kafka_bootstrap, kafka_topic, monkeypatch, how
):
    """Given a database that refuses every ledger row (a migration not applied,
    a trigger or constraint added by hand), the stream does not turn the whole
    topic into dead letters: at STREAM_DB_REFUSED_IN_A_ROW records refused in a
    row it stops loudly, storing no dead letter of the batch and committing no
    offset; once the database is mended, the same group scores every record."""
    good = simulated(60, seed=53, users=6)
    produce(kafka_bootstrap, kafka_topic, good)
    group = group_new()

    with monkeypatch.context() as patch, ledger_refusing(how, None, patch) as raised:
        stream = stream_build(
            kafka_bootstrap, kafka_topic, group=group, retry_limit=2,
            retry_backoff_seconds=0.01, refused_in_a_row=10,
            # One batch of all 60 (up to 5 s to gather them), so that the
            # outcome does not depend on how the polls split them.
            batch_max_records=60, batch_max_wait_ms=5000,
        )  # fmt: skip
        with pytest.raises(StreamDatabaseError, match="refused 10 records in a row"):
            stream.run(stop_when_idle=IDLE)

    assert raised, "the database refused nothing"
    assert stream.report.db_retries == 0
    assert stream.report.records == 0  # no batch was completed
    assert Transaction.objects.count() == 0
    assert DeadLetter.objects.count() == 0
    assert set(committed_offsets(kafka_bootstrap, group, kafka_topic).values()) <= {
        None
    }

    report = stream_run(kafka_bootstrap, kafka_topic, group=group)
    assert (report.records, report.created, report.dead_letters) == (60, 60, 0)
    assert set(verdicts_snapshot()) == {m["transaction_id"] for m in good}


def test_refusals_in_a_row_across_small_batches_stop_the_stream_too(
    kafka_bootstrap, kafka_topic, monkeypatch
):
    """Given a quiet stream (batches of one record) and a database refusing
    every row, the first refusals are dead letters (each could be the record's
    fault) until the limit, where the stream stops without committing the
    batch in hand."""
    good = simulated(8, seed=59, users=3)
    produce(kafka_bootstrap, kafka_topic, good)
    group = group_new()

    with monkeypatch.context() as patch, ledger_refusing("data error", None, patch):
        stream = stream_build(
            kafka_bootstrap, kafka_topic, group=group, batch_max_records=1,
            refused_in_a_row=3,
        )  # fmt: skip
        with pytest.raises(StreamDatabaseError, match="refused 3 records in a row"):
            stream.run(stop_when_idle=IDLE)

    assert stream.report.records == 2 and stream.report.dead_letters == 2
    assert DeadLetter.objects.count() == 2
    offsets = committed_offsets(kafka_bootstrap, group, kafka_topic)
    assert sum(offset or 0 for offset in offsets.values()) == 2
    assert Transaction.objects.count() == 0
    stopped = {json.loads(bytes(raw))["transaction_id"] for raw in
               DeadLetter.objects.values_list("raw_value", flat=True)}  # fmt: skip
    assert stopped < {m["transaction_id"] for m in good}

    # Mended, the same group scores the rest; the dead letters are redriven.
    report = stream_run(kafka_bootstrap, kafka_topic, group=group)
    assert (report.records, report.created, report.dead_letters) == (6, 6, 0)


def test_an_outage_while_isolating_a_refused_record_is_retried(
    kafka_bootstrap, kafka_topic, monkeypatch
):
    """Given a batch with a record the database refuses, an outage while the
    batch is stored in parts (OperationalError) is retried with backoff like
    any other, and the outcome is the same: one dead letter, the rest scored."""
    from django.db import OperationalError

    from detection.services import recording

    good = simulated(30, seed=47, users=5)
    bad = good[11]["transaction_id"]
    produce(kafka_bootstrap, kafka_topic, good)
    with ledger_refusing("data error", bad, monkeypatch) as raised:
        refusing, outages = recording.transactions_record, []

        def failing_once_after_a_refusal(*, rows):
            if raised and not outages:
                outages.append(1)
                raise OperationalError("server closed the connection unexpectedly")
            return refusing(rows=rows)

        monkeypatch.setattr(
            recording, "transactions_record", failing_once_after_a_refusal
        )
        report = stream_run(
            kafka_bootstrap, kafka_topic, retry_limit=2, retry_backoff_seconds=0.01
        )
    assert outages and report.db_retries == 1
    assert (report.records, report.created, report.dead_letters) == (30, 29, 1)
    assert "too long" in DeadLetter.objects.get().error
    assert bad not in verdicts_snapshot()


def test_an_id_stored_meanwhile_by_another_writer_is_not_a_refused_record(
    kafka_bootstrap, kafka_topic, monkeypatch
):
    """Given a record whose id another writer stores, for another card, between
    the batch's scoring and its insert, the database refuses the insert
    (IntegrityError) although nothing is wrong with the record's values: tried
    once more, the record is found stored, and is a dead letter for reusing an id
    (what it is), not one saying the database refused it."""
    from detection.profiles import OrmStateStore
    from detection.services import recording

    [payment] = simulated(1, seed=53, users=1)
    produce(kafka_bootstrap, kafka_topic, [payment])
    store, real_score, scorings = OrmStateStore(), recording.transaction_batch_score, []

    def score_then_another_writer(**kwargs):
        result = real_score(**kwargs)
        scorings.append(result)
        if len(scorings) == 1:
            transaction_stored(payment["transaction_id"], user_id="another-card")
        return result

    monkeypatch.setattr(recording, "transaction_batch_score", score_then_another_writer)
    report = stream_run(
        kafka_bootstrap, kafka_topic, store=store, retry_limit=2,
        retry_backoff_seconds=0.01,
    )  # fmt: skip

    assert len(scorings) >= 2
    assert (report.records, report.created, report.dead_letters) == (1, 0, 1)
    error = DeadLetter.objects.get().error
    assert "ids must not be reused" in error and "refused" not in error


def test_sends_a_broker_never_answers_are_reported_as_failed(tmp_path):
    """Given a broker that goes away after the first records, the produce run
    reports the later ones as failed, with the error (kafka-python's flush only
    logs them), instead of counting them as sent."""
    from detection.kafka import kafka_topic_ensure
    from fraudsite.embedded import EmbeddedKafka

    broker = EmbeddedKafka(log_dir=tmp_path)
    producer = None
    try:
        kafka_topic_ensure(bootstrap=broker.bootstrap, topic="short-lived")
        producer = producer_create(
            bootstrap=broker.bootstrap,
            request_timeout_ms=1000,
            delivery_timeout_ms=3000,
            max_block_ms=3000,
        )
        first = transactions_produce(
            producer=producer, topic="short-lived", records=simulated(10, seed=3)
        )
        assert (first.sent, first.delivered, first.failed) == (10, 10, 0)
        broker.stop()
        second = transactions_produce(
            producer=producer, topic="short-lived", records=simulated(20, seed=4)
        )
        assert (second.sent, second.delivered, second.failed) == (20, 0, 20)
        assert second.unconfirmed == 0 and second.first_error
    finally:
        if producer is not None:
            producer.close(timeout=1)
        broker.stop()


def test_stream_clients_warn_of_network_stalls_only_past_a_second(kafka_bootstrap):
    """The stream's consumers and producers run kafka-python's I/O thread with a
    1 s slow-step threshold instead of 0.1 s, which GIL waits alone exceed in a
    process that scores or produces (detection.kafka.NETWORK_SLOW_STEP_SECONDS)."""
    consumer = consumer_create(bootstrap=kafka_bootstrap, group_id=group_new())
    producer = producer_create(bootstrap=kafka_bootstrap)
    try:
        assert consumer.config["kafka_client"] is network_client
        assert producer.config["kafka_client"] is network_client
        threshold = consumer._client._net.config["slow_task_threshold_secs"]
        assert threshold == NETWORK_SLOW_STEP_SECONDS == 1.0
    finally:
        producer.close(timeout=1)
        consumer.close()


def test_a_json_lines_file_is_replayed_bad_lines_included(
    kafka_bootstrap, kafka_topic, settings, tmp_path
):
    """Given a JSON Lines file with a malformed line, when produce_transactions
    replays it, then the good lines are scored and the bad one is a dead letter."""
    settings.KAFKA_BROKER = kafka_bootstrap
    good = simulated(20, seed=37, users=5)
    path = tmp_path / "replay.jsonl"
    lines = (
        [json.dumps(m) for m in good[:10]]
        + ["{oops"]
        + [json.dumps(m) for m in good[10:]]
    )
    path.write_text("\n".join(lines) + "\n\n")
    out = StringIO()

    call_command(
        "produce_transactions", "--topic", kafka_topic, "--from-file", str(path),
        stdout=out,
    )  # fmt: skip
    report = stream_run(kafka_bootstrap, kafka_topic)

    assert "Sent 21 messages" in out.getvalue()
    assert (report.created, report.dead_letters) == (20, 1)
    assert bytes(DeadLetter.objects.get().raw_value) == b"{oops"


def test_rule_changes_reach_a_running_stream(kafka_bootstrap, kafka_topic):
    """Given a running stream, when an analyst disables a rule, then the next batch
    is scored without it, with no restart."""
    first, second = (dict(m, amount="25000.00") for m in simulated(2, seed=41, users=1))
    stream = stream_build(
        kafka_bootstrap, kafka_topic, config_provider=ScoringConfigProvider(
            refresh_seconds=0
        ),
    )  # fmt: skip
    stream.subscribe()
    try:
        produce(kafka_bootstrap, kafka_topic, [first])
        batch = batch_next(stream, what="record 1")
        stream.batch_process(batch)
        Rule.objects.filter(code="huge_amount").update(enabled=False)
        produce(kafka_bootstrap, kafka_topic, [second])
        batch = batch_next(stream, what="record 2")
        stream.batch_process(batch)
    finally:
        stream.close()

    codes = dict(Transaction.objects.values_list("transaction_id", "reason_codes"))
    assert " huge_amount " in codes[first["transaction_id"]]
    assert "huge_amount" not in codes[second["transaction_id"]]


def test_the_consumer_logs_its_progress(kafka_bootstrap, kafka_topic, caplog):
    """Given a progress interval, the consumer logs records, rate, dead letters and
    lag as it goes (operators watch this line)."""
    records = simulated(300, seed=23, users=30)
    produce(kafka_bootstrap, kafka_topic, [*records, b"not json"])
    with caplog.at_level("INFO", logger="detection.stream"):
        report = stream_run(kafka_bootstrap, kafka_topic, progress_interval=0)
    lines = [r.getMessage() for r in caplog.records if "progress:" in r.getMessage()]
    assert lines, "no progress line was logged"
    assert report.records == 301
    logged = sum(int(line.split()[1].replace(",", "")) for line in lines)
    assert logged == 301
    assert any("1 dead letters" in line for line in lines)
    assert lines[-1].endswith("lag 0 records")


def _after_stored_first(topic: str, bootstrap: str, already: int) -> datetime:
    """Run the simulator (seed 3) with `--start after-stored` for 20 payments
    on a topic holding `already` records; return the event time of the first
    it sent (read back from the topic)."""
    call_command(
        "produce_transactions",
        "--topic", topic, "--count", "20", "--seed", "3", "--users", "5",
        "--start", "after-stored",
        stdout=StringIO(),
    )  # fmt: skip
    values = dead_letter_topic_read(bootstrap, topic, already + 20)
    sent = [json.loads(v) for v in values if b'"transaction_id":"st-3-' in v]
    assert len(sent) == 20
    return min(datetime.fromisoformat(m["timestamp"]) for m in sent)


def test_a_restarted_simulator_starts_after_the_payments_it_already_sent(
    kafka_bootstrap, kafka_topic, settings
):
    """The simulator's clock runs ahead of the wall clock; restarted with
    `--start after-stored` (as `make run` starts it) its first payment comes
    after the latest one the stream stored, so no card's payments arrive late.
    With nothing stored, or only older payments, it starts now."""
    settings.KAFKA_BROKER = kafka_bootstrap
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    transaction_stored(
        "api-later", timestamp=ahead + timedelta(days=9), ingest_source="api"
    )
    transaction_stored("sim-ahead", timestamp=ahead, ingest_source="stream")
    first = _after_stored_first(kafka_topic, kafka_bootstrap, 0)
    # Only the stream's own payments count (an API-scored one dated later is not
    # the simulator's clock).
    assert ahead < first < ahead + timedelta(days=1)
    with pytest.raises(CommandError, match="after-stored"):
        call_command("produce_transactions", "--start", "soon", stdout=StringIO())


def test_a_restarted_simulator_starts_after_the_payments_still_on_the_topic(
    kafka_bootstrap, kafka_topic, settings
):
    """Payments sent but not consumed yet count too: a simulator restarted
    before the consumer caught up carries on after the last record of each
    partition, not from an older stored payment (the simulator runs ahead of
    the clock, with TRANSACTION_MAX_FUTURE_SECONDS off, as make run sets it)."""
    settings.KAFKA_BROKER = kafka_bootstrap
    settings.TRANSACTION_MAX_FUTURE_SECONDS = None
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    transaction_stored("sim-stored", timestamp=ahead, ingest_source="stream")
    waiting = {
        "transaction_id": "sim-waiting",
        "user_id": "u-waiting",
        "amount": "12.00",
        "timestamp": (ahead + timedelta(days=5)).isoformat(),
    }
    # The waiting payment last: the last record of its partition, whichever.
    produce(
        kafka_bootstrap,
        kafka_topic,
        [b"not json", {"transaction_id": "no-time", "user_id": "u2"}, waiting],
    )
    first = _after_stored_first(kafka_topic, kafka_bootstrap, 3)
    assert ahead + timedelta(days=5) < first < ahead + timedelta(days=6)


def test_a_restarted_simulator_follows_no_record_the_consumer_would_refuse(
    kafka_bootstrap, kafka_topic, settings
):
    """A record the consumer makes a dead letter (dated 2150, or further ahead
    than TRANSACTION_MAX_FUTURE_SECONDS) is no clock to follow: followed, every
    simulated payment after it would be a dead letter too. The simulator
    starts now."""
    settings.KAFKA_BROKER = kafka_bootstrap
    settings.TRANSACTION_MAX_FUTURE_SECONDS = 300
    now = datetime.now(UTC)
    refused = [
        {"transaction_id": "far", "user_id": "u1", "amount": "5", "timestamp": when}
        for when in ("2150-01-01T00:00:00Z", (now + timedelta(days=2)).isoformat())
    ]
    produce(kafka_bootstrap, kafka_topic, refused)
    first = _after_stored_first(kafka_topic, kafka_bootstrap, 2)
    assert now - timedelta(minutes=1) < first < now + timedelta(days=1)


@pytest.mark.parametrize("command", ["consume_transactions", "consume_chargebacks"])
@pytest.mark.parametrize("idle", ["-1", "nan", "inf"])
def test_a_negative_or_odd_idle_time_is_refused(command, idle):
    """`--stop-when-idle -1` was taken ("idle for -1.0 s"): now a clear error,
    before any Kafka connection."""
    with pytest.raises(CommandError, match="--stop-when-idle must be"):
        call_command(command, "--stop-when-idle", idle, stdout=StringIO())


class _PartlyFetchedConsumer:
    """A consumer whose fetches have answered for some partitions only (pure
    logic of `lag`: the broker's part is the high-water marks and ends)."""

    def __init__(self, highwater: dict, ends: dict, positions: dict):
        self._highwater, self._ends, self._positions = highwater, ends, positions

    def assignment(self):
        return set(self._positions)

    def highwater(self, tp):
        return self._highwater.get(tp)

    def end_offsets(self, partitions):
        return {tp: self._ends[tp] for tp in partitions}

    def position(self, tp):
        return self._positions[tp]


def test_the_lag_counts_partitions_no_fetch_has_answered_yet():
    """Given six partitions of which fetches have answered for two, the lag is
    every partition's remainder: the others' ends are asked for (it summed the
    two it knew: 2,932 where 19,500 were left)."""
    tps = [TopicPartition("t", p) for p in range(6)]
    consumer = _PartlyFetchedConsumer(
        highwater={tps[0]: 3400, tps[1]: 3300},
        ends={tp: 3300 + 10 * n for n, tp in enumerate(tps)},
        positions={tps[0]: 500, **dict.fromkeys(tps[1:], 0)},
    )
    stream = TransactionStream(consumer=consumer, topic="t")
    assert stream.lag() == (3400 - 500) + 3300 + sum(3300 + 10 * n for n in range(2, 6))
    assert (
        TransactionStream(consumer=_PartlyFetchedConsumer({}, {}, {}), topic="t").lag()
        is None
    )


def test_a_member_holding_no_partition_says_so(
    kafka_bootstrap, kafka_topic_factory, monkeypatch, caplog
):
    """Given two members of one group on a topic of one partition, the member
    left without one logs that it scores nothing, and why that may be (it was
    silent: an operator saw a consumer wait 417 s without a word)."""
    import detection.stream

    monkeypatch.setattr(detection.stream, "UNASSIGNED_WARN_SECONDS", 1.0)
    topic, group = kafka_topic_factory(partitions=1), group_new()
    members = [stream_build(kafka_bootstrap, topic, group=group) for _ in range(2)]
    threads = [threading.Thread(target=member.run) for member in members]
    caplog.set_level("WARNING", logger="detection.stream")

    def warned() -> list[str] | None:
        holders = [m for m in members if m.consumer.assignment()]
        if len(holders) != 1:
            return None
        (idle,) = [t for t, m in zip(threads, members, strict=True) if m not in holders]
        return [
            r.getMessage()
            for r in caplog.records
            if r.threadName == idle.name and r.getMessage().startswith("no partition")
        ]

    for thread in threads:
        thread.start()
    try:
        found = wait_until(
            warned, timeout=DEADLINE, what="a warning from the member without one"
        )
    finally:
        for member in members:
            member.shutdown.set()
        for thread in threads:
            thread.join(timeout=DEADLINE)
    assert not any(thread.is_alive() for thread in threads)
    assert found[-1].startswith(
        f"no partition of {topic} assigned to this member of group {group!r} for 1 s"
    )
    assert "it scores nothing" in found[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "nan"], "finite number of messages per second greater than 0"),
        (["--rate", "inf"], "finite number of messages per second greater than 0"),
        (["--chargebacks-after", "nan"], "finite number of seconds 0 or more"),
        (["--chargebacks-after", "-1"], "finite number of seconds 0 or more"),
        (["--topic", ""], "Kafka topic name"),
        (["--topic", "a b"], "Kafka topic name"),
        (["--count", "-1"], "whole number 0 or more"),
    ],
)
def test_the_producer_refuses_odd_options(args, message, settings):
    """NaN rates and delays (taken before: unthrottled, never due) and empty or
    invalid topic names are refused before any Kafka connection."""
    settings.KAFKA_BROKER = "127.0.0.1:9"  # Nothing listens: no topic is made.
    with pytest.raises(CommandError, match=message):
        call_command("produce_transactions", *args, stdout=StringIO())


@pytest.mark.parametrize("command", ["consume_transactions", "consume_chargebacks"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group", ""], "--group: must not be empty"),
        (["--group", "  "], "--group: must not be empty"),
        (["--topic", ""], "--topic: must be a Kafka topic name"),
    ],
)
def test_the_consumers_refuse_an_empty_group_or_topic(command, args, message, settings):
    """`--group ''` used the default group silently; now it is an error."""
    settings.KAFKA_BROKER = "127.0.0.1:9"
    with pytest.raises(CommandError, match=message):
        call_command(command, *args, "--stop-when-idle", "0", stdout=StringIO())
