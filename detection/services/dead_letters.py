"""Dead letters: decode again, after the cause is fixed, and score what is valid now."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from detection.models import DeadLetter
from detection.profiles import OrmStateStore
from detection.records import RecordError, timestamp_not_after, value_decode
from detection.scoring import ScoringConfig
from detection.services.recording import (
    transaction_batch_score_record,
    transaction_id_conflicts,
)
from transactions.messages import TransactionMessage


@dataclass
class RedriveReport:
    """What a dead-letter redrive did."""

    scored: int = 0
    already_stored: int = 0
    still_invalid: int = 0
    # Valid, but its id is stored for another payment: left unresolved.
    conflicting: int = 0
    # Chargeback letters (detection.chargebacks): labelled now, or whose
    # transaction is still not stored (left unresolved).
    labelled: int = 0
    unmatched: int = 0

    def add(self, other: RedriveReport) -> None:
        """Add another report's counts to this one."""
        for name, value in dataclasses.asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def summary(self) -> str:
        """Return the counts in words (admin message, command output)."""
        text = (
            f"{self.scored:,} scored, {self.already_stored:,} already stored, "
            f"{self.still_invalid:,} still invalid, {self.conflicting:,} reusing "
            "the id of another payment"
        )
        if self.labelled or self.unmatched:
            text += (
                f"; chargebacks: {self.labelled:,} labelled, {self.unmatched:,} "
                "whose transaction is still not stored"
            )
        return text

    @property
    def unresolved(self) -> int:
        """Return how many letters stay unresolved."""
        return self.still_invalid + self.conflicting + self.unmatched


def dead_letters_redrive(
    *, letters: Sequence[DeadLetter], config: ScoringConfig
) -> RedriveReport:
    """Decode dead letters again; score and store the ones that are valid now.

    For after the cause is fixed (a producer bug, a validation change). Letters that
    decode go through the live score-and-record path (source "redrive", their
    original received_at) and are marked resolved; letters still invalid keep their
    row with the new error in `resolution`. Nothing is deleted, and resolved letters
    are skipped, so a redrive may run again.
    """
    from detection.chargebacks import (
        ALREADY_STORED,
        LABELLED,
        SUPERSEDED,
        chargebacks_redrive,
    )

    report = RedriveReport()
    pending = [letter for letter in letters if letter.resolved_at is None]
    # Letters from the chargeback topic are reports that label, not payments.
    chargebacks = [
        letter for letter in pending if letter.topic == settings.KAFKA_CHARGEBACKS_TOPIC
    ]
    pending = [
        letter for letter in pending if letter.topic != settings.KAFKA_CHARGEBACKS_TOPIC
    ]
    valid: list[tuple[DeadLetter, TransactionMessage]] = []
    now = datetime.now(UTC)
    for letter in pending:
        try:
            message = value_decode(
                bytes(letter.raw_value),
                # As when it arrived: a redrive must not let through what was
                # dated too far ahead of its arrival because time has passed.
                not_after=timestamp_not_after(letter.received_at, now=now),
                currencies=config.currencies,
                received_at=letter.received_at,
            )
        except RecordError as exc:
            letter.resolution = f"Still invalid: {exc}"
            report.still_invalid += 1
            continue
        message.received_at = letter.received_at
        valid.append((letter, message))
    with transaction.atomic():
        result = transaction_batch_score_record(
            messages=[message for _letter, message in valid],
            store=OrmStateStore(use_cache=False),
            config=config,
            source="redrive",
        )
        created = {row["transaction_id"] for row in result.created}
        conflicts = transaction_id_conflicts([m for _letter, m in valid])
        resolved_at = datetime.now(UTC)
        for (letter, message), conflict in zip(valid, conflicts, strict=True):
            if conflict:
                letter.resolution = conflict
                report.conflicting += 1
                continue
            letter.resolved_at = resolved_at
            if message.transaction_id in created:
                created.discard(message.transaction_id)
                letter.resolution = f"Scored as {message.transaction_id}."
                report.scored += 1
            else:
                letter.resolution = f"Already stored as {message.transaction_id}."
                report.already_stored += 1
        if chargebacks:
            for outcome in chargebacks_redrive(letters=chargebacks).outcomes:
                if outcome == LABELLED:
                    report.labelled += 1
                elif outcome in (ALREADY_STORED, SUPERSEDED):
                    report.already_stored += 1
                elif outcome.startswith("Still invalid"):
                    report.still_invalid += 1
                else:
                    report.unmatched += 1
        DeadLetter.objects.bulk_update(
            [*pending, *chargebacks], ["resolved_at", "resolution"]
        )
    return report
