"""Kafka records become messages or dead letters that every database can store."""

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from detection.models import DeadLetter
from detection.records import dead_letters_store, record_decode

T0_MS = 1_767_225_600_000


def record(value: bytes, *, timestamp: int = T0_MS) -> ConsumerRecord:
    """Return a consumer record at transactions[2]@41 holding `value`."""
    return ConsumerRecord(
        topic="transactions",
        partition=2,
        leader_epoch=0,
        offset=41,
        timestamp=timestamp,
        timestamp_type=0,
        key=b"u1",
        value=value,
        headers=[],
        checksum=None,
        serialized_key_size=2,
        serialized_value_size=len(value),
        serialized_header_size=-1,
    )


def test_nul_bytes_become_a_dead_letter_with_a_storable_preview():
    """Garbage with NUL bytes is a dead letter; its text fields hold no NUL."""
    letter = record_decode(record(b"\x00\x01garbage\x00"))
    assert isinstance(letter, DeadLetter)
    assert "\x00" not in letter.raw_preview and "\x00" not in letter.error
    assert bytes(letter.raw_value) == b"\x00\x01garbage\x00"
    assert (letter.topic, letter.partition, letter.offset) == ("transactions", 2, 41)


def test_json_with_a_nul_in_a_field_is_a_dead_letter():
    """A NUL inside a string field is a schema error, not a database error."""
    letter = record_decode(record(b'{"user_id": "a\\u0000b", "amount": 5}'))
    assert isinstance(letter, DeadLetter)
    assert "Null characters" in letter.error


@pytest.mark.django_db
def test_a_replayed_dead_letter_is_stored_once_but_a_new_one_at_its_position_too():
    """Given a dead letter stored, its redelivery adds nothing; a different bad
    record at the same position (the topic was made again, its offsets restarted)
    is stored as well."""
    dead_letters_store([record_decode(record(b"not json"))])
    dead_letters_store([record_decode(record(b"not json"))])
    assert DeadLetter.objects.count() == 1
    later = record(b'{"amount": -5}', timestamp=T0_MS + 86_400_000)
    dead_letters_store([record_decode(later)])
    assert sorted(bytes(d.raw_value) for d in DeadLetter.objects.all()) == [
        b"not json",
        b'{"amount": -5}',
    ]


def test_a_transaction_dated_too_far_ahead_is_a_dead_letter_when_limited(settings):
    """With TRANSACTION_MAX_FUTURE_SECONDS (5 minutes by default), a record dated
    beyond it is a dead letter naming the timestamp; switched off, any time is
    taken."""
    from datetime import UTC, datetime, timedelta

    from detection.records import records_decode

    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    values = [
        f'{{"transaction_id": "{name}", "user_id": "u1", "amount": 5, '
        f'"timestamp": "{moment}"}}'.encode()
        for name, moment in (("far", ahead), ("near", soon))
    ]
    settings.TRANSACTION_MAX_FUTURE_SECONDS = None
    messages, letters = records_decode([record(v) for v in values])
    assert [m.transaction_id for m in messages] == ["far", "near"] and not letters

    settings.TRANSACTION_MAX_FUTURE_SECONDS = 86400
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    messages, letters = records_decode([record(v, timestamp=now_ms) for v in values])
    assert [m.transaction_id for m in messages] == ["near"]
    assert len(letters) == 1 and "timestamp" in letters[0].error
    assert "TRANSACTION_MAX_FUTURE_SECONDS" in letters[0].error

    # Counted from arrival, not from decoding: a record that arrived 3 days
    # ago dated 2 days after its arrival is refused by a lagging consumer too.
    arrived_ms = now_ms - 3 * 86_400_000
    late = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    value = (
        f'{{"transaction_id": "lagged", "user_id": "u1", "amount": 5, '
        f'"timestamp": "{late}"}}'.encode()
    )
    messages, letters = records_decode([record(value, timestamp=arrived_ms)])
    assert not messages and "TRANSACTION_MAX_FUTURE_SECONDS" in letters[0].error
    # A record stamped ahead (a producer's clock) moves the limit no further
    # than now.
    ahead_ms = now_ms + 30 * 86_400_000
    messages, letters = records_decode([record(values[0], timestamp=ahead_ms)])
    assert not messages and len(letters) == 1


def test_a_currency_without_an_exchange_rate_is_a_dead_letter():
    """Amounts are compared in the base currency: a record in a currency with no
    rate is a dead letter that says how to mend it, never scored as dollars."""
    from detection.records import records_decode

    values = [
        f'{{"transaction_id": "{name}", "user_id": "u1", "amount": 5, '
        f'"currency": "{code}"}}'.encode()
        for name, code in (("yen", "JPY"), ("unknown", "KES"))
    ]
    messages, letters = records_decode(
        [record(v) for v in values], currencies={"USD", "JPY"}
    )
    assert [m.transaction_id for m in messages] == ["yen"]
    assert len(letters) == 1
    assert "No exchange rate for KES" in letters[0].error


def test_an_amount_with_more_decimals_than_its_currency_has_is_a_dead_letter():
    """The stream takes an amount in its currency's minor unit: 12.345 KWD
    (fils) and 100.00 JPY (100 yen) are scored; 100.5 JPY is a dead letter whose
    error names the currency, as the API's 400 does."""
    from detection.records import records_decode

    values = [
        f'{{"transaction_id": "{name}", "user_id": "u1", "amount": "{amount}", '
        f'"currency": "{code}"}}'.encode()
        for name, amount, code in (
            ("yen-fraction", "100.5", "JPY"),
            ("yen", "100.00", "JPY"),
            ("fils", "12.345", "KWD"),
        )
    ]
    messages, letters = records_decode(
        [record(v) for v in values], currencies={"USD", "JPY", "KWD"}
    )
    assert [(m.transaction_id, str(m.amount)) for m in messages] == [
        ("yen", "100"),
        ("fils", "12.345"),
    ]
    (letter,) = letters
    assert bytes(letter.raw_value) == values[0]
    assert '{"amount": ["JPY amounts have no decimal places."]}' in letter.error


def test_a_record_without_a_timestamp_is_dated_when_the_broker_got_it():
    """A message with no `timestamp` gets the Kafka record's time, not the moment
    a (lagging) consumer decodes it."""
    message = record_decode(
        record(b'{"transaction_id": "t1", "user_id": "u1", "amount": 5}')
    )
    assert message.timestamp.timestamp() * 1000 == T0_MS
    assert message.received_at == message.timestamp


@pytest.mark.parametrize("stamp", [2**62, 253402300799000, 0, 1])
def test_a_record_timestamp_no_message_may_carry_is_taken_as_now(stamp):
    """A producer may stamp any 64-bit number (or year 9999, or the epoch); the
    consumer must not crash on it, nor date a message without a time by it."""
    value = b'{"transaction_id": "t1", "user_id": "u1", "amount": 5}'
    message = record_decode(record(value, timestamp=stamp))
    assert 2026 <= message.received_at.year < 2100
    assert message.timestamp == message.received_at


def test_a_placeholder_date_is_a_dead_letter():
    """Year 9999 (.NET's DateTime.MaxValue) is refused with the allowed range."""
    letter = record_decode(
        record(b'{"user_id": "u1", "amount": 5, "timestamp": "9999-12-31T23:59:59Z"}')
    )
    assert isinstance(letter, DeadLetter)
    assert "Must be from 2000-01-01 and before 2100-01-01" in letter.error


@pytest.mark.parametrize(
    "value",
    [
        {"user_id": "card-1\t"},
        b'{"user_id": " card-1 "}',
        b'{"user_id": "card-1"}',
    ],
)
def test_the_kafka_key_is_the_user_id_as_validation_stores_it(value):
    """The producer keys a record by its user_id stripped as the consumer's
    validation stores it, so one card's records share one partition."""
    from detection.kafka import record_key

    assert record_key(value) == b"card-1"
