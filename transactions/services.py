"""Writes to the ledger. Callers own the database transaction (see detection)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection
from django.db import transaction as db_transaction
from django.db.models import F

from transactions.bulk import rows_insert
from transactions.models import Label, ReasonTally, Transaction, VerdictTally


def transactions_record(*, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert scored transactions and add them to the per-minute tallies.

    Each row maps Transaction attribute names to values. The caller filters out
    ids that are already stored (idempotency is decided before scoring, so user
    state is never applied twice) and wraps this call in the same
    `transaction.atomic()` as its user-state writes. No keys are read back: the
    stream never needs them, and readers find rows by transaction_id.
    """
    if rows:
        rows_insert(model=Transaction, rows=rows)
        tallies_add(rows=rows)


def tallies_add(*, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add the verdicts to the tallies of the minute they were scored in: by
    status (VerdictTally) and by reason code (ReasonTally)."""
    per_minute: dict = {}
    reasons: Counter = Counter()
    flagged: Counter = Counter()
    for row in rows:
        minute = row["scored_at"].replace(second=0, microsecond=0)
        per_minute.setdefault(minute, Counter())[row["status"]] += 1
        codes = row.get("reason_codes")
        if codes:
            for code in codes.split():
                reasons[minute, code] += 1
                if row["status"] != Transaction.Status.LEGIT:
                    flagged[minute, code] += 1
    if reasons:
        _reason_tallies_add(reasons, flagged)
    for minute, counts in per_minute.items():
        # get_or_create absorbs the insert race between two writers (it retries the
        # get on IntegrityError); the F() update then increments atomically.
        VerdictTally.objects.get_or_create(minute=minute)
        VerdictTally.objects.filter(minute=minute).update(
            total=F("total") + sum(counts.values()),
            legit=F("legit") + counts[Transaction.Status.LEGIT],
            suspicious=F("suspicious") + counts[Transaction.Status.SUSPICIOUS],
            fraud=F("fraud") + counts[Transaction.Status.FRAUD],
        )


def label_create(
    *,
    transaction: Transaction,
    is_fraud: bool,
    source: str = Label.Source.ANALYST,
    note: str = "",
    created_by=None,
) -> Label:
    """Record a label on a transaction and return it.

    Labels are appended, never edited: the latest one wins and the history stays
    for audit and training. The stored verdict is deliberately left untouched.
    """
    with db_transaction.atomic():
        return Label.objects.create(
            transaction=transaction,
            is_fraud=is_fraud,
            source=source,
            note=note.strip(),
            created_by=created_by,
        )


def _reason_tallies_add(fired: Counter, flagged: Counter) -> None:
    """Upsert (minute, code) counts in one statement: insert, or add to the row."""
    table = connection.ops.quote_name(ReasonTally._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (minute, code, fired, flagged) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (minute, code) DO UPDATE SET "
            f"fired = {table}.fired + excluded.fired, "
            f"flagged = {table}.flagged + excluded.flagged",
            [
                (
                    connection.ops.adapt_datetimefield_value(minute),
                    code,
                    count,
                    flagged[minute, code],
                )
                for (minute, code), count in fired.items()
            ],
        )
