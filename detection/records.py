"""Kafka records to messages or dead letters, and the offsets a batch commits."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from kafka import OffsetAndMetadata, TopicPartition

from detection.models import DeadLetter
from transactions.messages import (
    MessageError,
    TransactionMessage,
    timestamp_allowed,
    transaction_message_parse,
)

PREVIEW_CHARS = 2000


def record_received_at(record) -> datetime:
    """Return the Kafka record's timestamp as an aware UTC datetime.

    A record without one, or with one outside the times a message may carry
    (a producer may set any 64-bit number), counts as received now.
    """
    if record.timestamp is None or record.timestamp < 0:
        return datetime.now(UTC)
    try:
        moment = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.now(UTC)
    # A message without its own time is dated by this one: it must be a time a
    # message may carry (year 9999 would crash date arithmetic downstream).
    if not timestamp_allowed(moment):
        return datetime.now(UTC)
    return moment


def dead_letter_build(record, error: str, received_at: datetime) -> DeadLetter:
    """Return an unsaved DeadLetter for a record the stream cannot score."""
    raw = record.value if record.value is not None else b""
    preview = raw[: PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
    return DeadLetter(
        raw_value=raw,
        # PostgreSQL text cannot hold NUL; the exact bytes stay in raw_value.
        raw_preview=preview[:PREVIEW_CHARS].replace("\x00", "\ufffd"),
        error=error.replace("\x00", "\ufffd"),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        received_at=received_at,
    )


class RecordError(ValueError):
    """A record value that is not a valid transaction message; str() says why."""


def timestamp_not_after(
    received_at: datetime | None = None, *, now: datetime | None = None
) -> datetime | None:
    """Return the latest event time the live paths accept, or None (no limit).

    A transaction dated far ahead (a producer's clock, a typo) would move its
    card's 24 h window with it; TRANSACTION_MAX_FUTURE_SECONDS refuses those,
    counted from when the record arrived (`received_at`), so that a lagging
    consumer or a redrive decides as a prompt one would have; never from
    later than now (a record stamped ahead by a producer's clock).
    """
    seconds = settings.TRANSACTION_MAX_FUTURE_SECONDS
    if seconds is None:
        return None
    now = now or datetime.now(UTC)
    start = now if received_at is None else min(received_at, now)
    return start + timedelta(seconds=seconds)


def record_json_load(value: bytes | None):
    """Return the JSON in a record value; raise RecordError if it holds none."""
    if not value:
        raise RecordError("Empty record value.")
    try:
        # orjson: 5x faster than json.loads here, and stricter: NaN, Infinity,
        # unpaired surrogates and a leading BOM are refused (dead letters), and
        # integers of 2**64 and more become floats (refused where a field wants a
        # string or a whole number). The API's JSON parser is more lenient there.
        return orjson.loads(value)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 too (UnicodeDecodeError is a subclass).
        raise RecordError(f"Not JSON: {exc}") from exc


def value_decode(
    value: bytes | None,
    *,
    not_after: datetime | None = None,
    currencies: Collection[str] | None = None,
    received_at: datetime | None = None,
) -> TransactionMessage:
    """Return the validated message in a record value; raise RecordError if none.

    `not_after` and `currencies` are the live limits of `transaction_message_parse`.
    A message without a timestamp is dated `received_at` (when the broker got
    it), not when it happens to be decoded: a lagging consumer or a redrive
    would date it late.
    """
    data = record_json_load(value)
    try:
        return transaction_message_parse(
            data, not_after=not_after, currencies=currencies, now=received_at
        )
    except MessageError as exc:
        raise RecordError("Invalid message: " + json.dumps(exc.errors)) from exc


def record_decode(
    record,
    *,
    currencies: Collection[str] | None = None,
    now: datetime | None = None,
) -> TransactionMessage | DeadLetter:
    """Return the validated message in a record, or its dead letter."""
    received_at = record_received_at(record)
    try:
        message = value_decode(
            record.value,
            not_after=timestamp_not_after(received_at, now=now),
            currencies=currencies,
            received_at=received_at,
        )
    except RecordError as exc:
        return dead_letter_build(record, str(exc), received_at)
    message.received_at = received_at
    return message


def records_decode(
    records: Sequence, *, currencies: Collection[str] | None = None
) -> tuple[list[TransactionMessage], list[DeadLetter]]:
    """Split records into validated messages and dead letters, in record order.

    A currency outside `currencies` (those with an exchange rate) is a dead letter.
    Each message keeps its record (`message.record`), so that a problem found
    later (an id reused for another payment) can still make it a dead letter.
    """
    messages: list[TransactionMessage] = []
    letters: list[DeadLetter] = []
    now = datetime.now(UTC)
    for record in records:
        decoded = record_decode(record, currencies=currencies, now=now)
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
        else:
            decoded.record = record
            messages.append(decoded)
    return messages, letters


def dead_letters_store(letters: Sequence[DeadLetter]) -> None:
    """Store dead letters; a replayed one (same position and timestamp) is kept once."""
    if letters:
        DeadLetter.objects.bulk_create(letters, ignore_conflicts=True)


def offsets_next(records: Sequence) -> dict[TopicPartition, OffsetAndMetadata]:
    """Return, per partition, the offset after the last of these records."""
    last: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        if record.offset >= last.get(tp, -1):
            last[tp] = record.offset
    return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}
