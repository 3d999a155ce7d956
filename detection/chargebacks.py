"""Chargebacks from Kafka: after-the-fact fraud reports that label stored payments.

A card network's chargeback (or an issuer's fraud report) arrives days or weeks
after the payment. Each one becomes a `Label` with source "chargeback" on the
stored transaction, through the same labelling service as an analyst's
(`transaction_label`): latest label wins, the verdict stays, a "not fraud" outcome
teaches the card's profile. Labels feed the rule performance panel, the
merchant_fraud rule, retraining and the model's activation check.

Delivery is at-least-once, so every label carries a reference: the report's
`dispute_id` (with its outcome and `reported_at`), or else the record's Kafka
position and a digest of its value. A reference is
stored once per source, so a replayed feed labels nothing twice. A report on a
transaction that is not stored (not scored yet, or another system's) is a dead
letter with that error; a redrive labels it once the transaction is there.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from django.db import transaction
from kafka import KafkaProducer

from detection.events import labels_announce
from detection.models import DeadLetter
from detection.records import (
    RecordError,
    dead_letter_build,
    dead_letters_store,
    record_json_load,
    record_received_at,
)
from detection.retrying import REFUSED, refusals_isolated
from detection.services import transaction_label
from detection.stream import TransactionStream
from transactions.messages import (
    ChargebackMessage,
    MessageError,
    chargeback_message_parse,
)
from transactions.models import Label, Transaction

logger = logging.getLogger(__name__)


def chargeback_value_decode(value: bytes | None) -> ChargebackMessage:
    """Return the validated chargeback in a record value; raise RecordError if none."""
    data = record_json_load(value)
    try:
        return chargeback_message_parse(data)
    except MessageError as exc:
        raise RecordError("Invalid chargeback: " + json.dumps(exc.errors)) from exc


def chargeback_reference(
    message: ChargebackMessage,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    value: bytes,
) -> str:
    """Return the label reference of a report: its dispute, payment, outcome and
    report time, or its position.

    A dispute's opening (fraud) and its closing (not fraud) are two reports, and
    a dispute id is the network's, not unique across payments: both are part of
    the reference, and so is `reported_at` when given, so that a dispute
    reopened (fraud, then not fraud, then fraud again) labels at every stage.
    The position carries a digest of the value: the embedded broker forgets its
    log on restart and reuses offsets, and the record's timestamp may be
    missing (then the time it was read would make every replay look new).
    """
    if message.dispute_id:
        outcome = "fraud" if message.is_fraud else "legit"
        reference = f"{message.dispute_id}|{message.transaction_id}|{outcome}"
        if message.reported_at is not None:
            reported = message.reported_at.astimezone(UTC)
            reference += f"|{reported:%Y-%m-%dT%H:%M:%S.%fZ}"
        return _reference_fitted(reference)
    digest = hashlib.sha256(value).hexdigest()[:16]
    return _reference_fitted(f"{topic}:{partition}:{offset}#{digest}")


def _reference_fitted(reference: str) -> str:
    """Return `reference` as `Label.reference` can hold it: as it is, or, when
    longer (a 64-character dispute id and transaction id with a report time,
    a long topic name), its start and a digest of the whole. PostgreSQL
    refused the longer text, and the consumer retried that batch for ever."""
    limit = Label._meta.get_field("reference").max_length
    if len(reference) <= limit:
        return reference
    digest = hashlib.sha256(reference.encode()).hexdigest()[:32]
    return f"{reference[: limit - len(digest) - 1]}#{digest}"


LABELLED = "labelled"
ALREADY_STORED = "already stored"
# A dispute's stage older (by reported_at) than one of its stages already
# applied: arriving late (a redrive, a feed out of order), it must not become
# the payment's latest label. Not a dead letter; no label.
SUPERSEDED = "superseded by a later stage of its dispute"
# The outcomes that leave nothing to do.
SETTLED = (LABELLED, ALREADY_STORED, SUPERSEDED)


@dataclass
class ChargebackReport:
    """What storing a batch of chargebacks did, report by report."""

    # Per report: LABELLED, ALREADY_STORED, SUPERSEDED, or why it cannot be
    # applied.
    outcomes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        """Return how many reports became labels."""
        return self.outcomes.count(LABELLED)

    @property
    def already_stored(self) -> int:
        """Return how many reports were labelled before (replays)."""
        return self.outcomes.count(ALREADY_STORED)

    @property
    def superseded(self) -> int:
        """Return how many reports were older stages of a dispute applied since."""
        return self.outcomes.count(SUPERSEDED)

    @property
    def unapplied(self) -> list[tuple[int, str]]:
        """Return (index, error) of the reports that cannot be applied."""
        return [
            (index, outcome)
            for index, outcome in enumerate(self.outcomes)
            if outcome not in SETTLED
        ]


def chargebacks_apply(
    *, reports: Sequence[tuple[ChargebackMessage, str]]
) -> ChargebackReport:
    """Label the transactions these reports name (call inside a transaction).

    `reports` pairs each message with its reference. A reference already stored
    (a replay, or the same dispute twice in the batch) is skipped; a transaction
    that is not stored is an outcome naming it, to become a dead letter.
    """
    result = ChargebackReport()
    labels: list[Label] = []
    references = {reference for _message, reference in reports}
    seen = set(
        Label.objects.filter(
            source=Label.Source.CHARGEBACK, reference__in=references
        ).values_list("reference", flat=True)
    )
    records = Transaction.objects.in_bulk(
        {message.transaction_id for message, _reference in reports},
        field_name="transaction_id",
    )
    for message, reference in reports:
        record = records.get(message.transaction_id)
        if reference in seen:
            result.outcomes.append(ALREADY_STORED)
        elif record is None:
            result.outcomes.append(
                f"No stored transaction {message.transaction_id!r}: a chargeback "
                "labels a payment the stream has scored. Redrive this letter once "
                "it is stored."
            )
        elif _stage_superseded(record, message):
            result.outcomes.append(SUPERSEDED)
        else:
            seen.add(reference)
            label = transaction_label(
                record=record,
                is_fraud=message.is_fraud,
                source=Label.Source.CHARGEBACK,
                note=message.label_note(),
                reference=reference,
                announce=False,
                reported_at=message.reported_at,
            )
            labels.append(label)
            result.outcomes.append(LABELLED)
    if labels:
        # One event for the batch, once it is committed.
        transaction.on_commit(lambda: labels_announce(labels))
    return result


def _stage_superseded(record: Transaction, message: ChargebackMessage) -> bool:
    """Return whether a later stage of this report's dispute (by reported_at)
    already labels the payment: the opening of a dispute redriven after its
    closing must not make "fraud" the latest label again."""
    if not message.dispute_id or message.reported_at is None:
        return False
    return Label.objects.filter(
        transaction=record,
        source=Label.Source.CHARGEBACK,
        # The reference starts with the dispute id (see chargeback_reference).
        reference__startswith=f"{message.dispute_id}|",
        reported_at__gt=message.reported_at,
    ).exists()


class ChargebackStream(TransactionStream):
    """A consumer-group member that turns chargeback records into labels.

    It runs the transaction stream's loop (micro-batches, signals, database
    retries, dead letters, offsets committed after the writes, --stop-when-idle)
    with its own batch step: decode, label, store dead letters, all in one
    database transaction, then commit. `report.created` counts labels and
    `report.duplicates` reports already applied.
    """

    created_word = "labelled"
    duplicate_word = "already labelled"

    def reports_store(
        self,
        reports: Sequence[tuple[ChargebackMessage, str]],
        positions: Sequence,
        letters: Sequence[DeadLetter],
    ) -> tuple[ChargebackReport, list[DeadLetter]]:
        """Apply the reports and store the dead letters in one transaction,
        retrying outages; return the result and the reports' new dead letters.

        A refusal (REFUSED) is isolated as the transaction stream's is
        (`refusals_isolated`): the reports are stored in halves, in order, and
        one refused alone becomes a dead letter with the refusal, while the rest
        is labelled. The decoding's dead letters go with the first part.
        """

        def letters_built(start: int, result: ChargebackReport) -> list[DeadLetter]:
            return [
                dead_letter_build(
                    positions[start + index][0], error, positions[start + index][1]
                )
                for index, error in result.unapplied
            ]

        def store(start: int, stop: int):
            first = letters if start == 0 else []
            with transaction.atomic():
                result = chargebacks_apply(reports=reports[start:stop])
                unapplied = letters_built(start, result)
                dead_letters_store([*first, *unapplied])
            return result, unapplied

        def attempt(start: int, stop: int):
            return self._retrying(lambda: store(start, stop), refused=REFUSED)

        refused_letters: list[DeadLetter] = []

        def refused(start: int, stop: int, refusal: Exception):
            logger.warning("the database refused a chargeback: %s", refusal)
            error = f"database refused the record: {refusal}"
            result = ChargebackReport(outcomes=[error] * (stop - start))
            dead = letters_built(start, result)
            # Stored once the whole batch is through, as the transaction
            # stream's are (RefusalStreak).
            refused_letters.extend(dead)
            return result, dead

        def combine(first, second):
            (one, one_letters), (two, two_letters) = first, second
            outcomes = [*one.outcomes, *two.outcomes]
            return ChargebackReport(outcomes), [*one_letters, *two_letters]

        result, unapplied = refusals_isolated(
            len(reports), attempt, refused, combine, self.refusal_streak
        )
        if refused_letters:
            # With the decoding's, in case the first part was refused (a replayed
            # dead letter is kept once). Dead letters refused too are a fault of
            # ours: retried, then the stream stops loudly.
            def store_refused() -> None:
                with transaction.atomic():
                    dead_letters_store([*letters, *refused_letters])

            self._retrying(store_refused)
        return result, unapplied

    def batch_process(self, records: Sequence) -> ChargebackReport:
        """Decode, label and commit one batch of chargeback records."""
        reports: list[tuple[ChargebackMessage, str]] = []
        positions: list = []
        letters: list[DeadLetter] = []
        for record in records:
            received_at = record_received_at(record)
            try:
                message = chargeback_value_decode(record.value)
            except RecordError as exc:
                letters.append(dead_letter_build(record, str(exc), received_at))
                continue
            reference = chargeback_reference(
                message,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                value=record.value or b"",
            )
            reports.append((message, reference))
            positions.append((record, received_at))

        result, unapplied = self.reports_store(reports, positions, letters)
        if unapplied:
            logger.warning(
                "%d chargebacks cannot be applied: dead letters now", len(unapplied)
            )
        letters = [*letters, *unapplied]
        self.dead_letters_forward(letters)
        self.offsets_commit(records)
        report = self.report
        report.records += len(records)
        report.created += result.labelled
        report.duplicates += result.already_stored + result.superseded
        report.dead_letters += len(letters)
        report.batches += 1
        self._last_activity = time.monotonic()
        return result


def chargebacks_redrive(*, letters: Sequence[DeadLetter]) -> ChargebackReport:
    """Apply dead-lettered chargebacks again (call inside a transaction).

    Letters that decode and whose transaction is stored now become labels (or
    are found labelled already) and are marked resolved; the others keep their
    row with the new error in `resolution`. Each letter keeps the reference it
    had on the topic, so a redrive after a replay labels once. The report has
    one outcome per letter.
    """
    outcomes: dict[int, str] = {}
    applicable: list[tuple[int, ChargebackMessage, str]] = []
    for index, letter in enumerate(letters):
        try:
            message = chargeback_value_decode(bytes(letter.raw_value))
        except RecordError as exc:
            outcomes[index] = f"Still invalid: {exc}"
            continue
        reference = chargeback_reference(
            message,
            topic=letter.topic,
            partition=letter.partition,
            offset=letter.offset,
            value=bytes(letter.raw_value),
        )
        applicable.append((index, message, reference))
    applied = chargebacks_apply(
        reports=[(message, reference) for _index, message, reference in applicable]
    )
    for (index, _message, _reference), outcome in zip(
        applicable, applied.outcomes, strict=True
    ):
        outcomes[index] = outcome
    resolved_at = datetime.now(UTC)
    for index, letter in enumerate(letters):
        outcome = outcomes[index]
        if outcome in SETTLED:
            letter.resolved_at = resolved_at
            letter.resolution = f"Chargeback {outcome}."
        else:
            letter.resolution = outcome
    return ChargebackReport(outcomes=[outcomes[i] for i in range(len(letters))])


class SimulatedChargebacks:
    """Send a chargeback for each simulated fraud, `delay` seconds after it.

    The simulator knows which of its payments are fraud (`is_fraud`); a real
    network reports those days later. `make run` uses a short delay so the
    labels reach the dashboard while you watch. Reports still waiting when the
    producer is stopped are not sent (they are in the future).
    """

    def __init__(self, *, producer: KafkaProducer, topic: str, delay: float) -> None:
        self.producer = producer
        self.topic = topic
        self.delay = delay
        self._due: list[tuple[float, int, dict]] = []
        self._order = itertools.count()
        self.sent = 0

    def observe(self, record: dict | bytes) -> None:
        """Schedule a chargeback if this sent record is a simulated fraud, and
        send those that are due."""
        if not isinstance(record, dict):
            try:
                record = orjson.loads(record)
            except ValueError:
                record = None
        if (
            isinstance(record, dict)
            and record.get("is_fraud") is True
            and isinstance(record.get("transaction_id"), str)
        ):
            report = {
                "transaction_id": record["transaction_id"],
                "is_fraud": True,
                "dispute_id": f"sim-cb-{record['transaction_id']}",
                "reason_code": "10.4",
                "note": "simulated",
            }
            heapq.heappush(
                self._due, (time.monotonic() + self.delay, next(self._order), report)
            )
        self.send_due()

    @property
    def pending(self) -> int:
        """Return how many chargebacks are scheduled but not sent yet."""
        return len(self._due)

    def send_due(self, now: float | None = None) -> int:
        """Send the chargebacks that are due; return how many."""
        now = time.monotonic() if now is None else now
        count = 0
        while self._due and self._due[0][0] <= now:
            _due, _order, report = heapq.heappop(self._due)
            self.producer.send(
                self.topic,
                key=report["transaction_id"].encode(),
                value=orjson.dumps(report),
            )
            count += 1
        self.sent += count
        return count

    def finish(self, *, stop) -> None:
        """Wait for the pending chargebacks to come due and send them, unless
        `stop` (a threading.Event) is set; then flush."""
        while self._due and not stop.is_set():
            # Waits for the schedule (or for Ctrl-C), not for another process.
            stop.wait(max(0.0, self._due[0][0] - time.monotonic()))
            if not stop.is_set():
                self.send_due()
        self.producer.flush()
