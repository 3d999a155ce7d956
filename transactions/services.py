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
    for row in rows:
        minute = row["scored_at"].replace(second=0, microsecond=0)
        per_minute.setdefault(minute, Counter())[row["status"]] += 1
    reason_tallies_add(rows=rows)
    # Rows in one order (minute, code) for every writer: two batches upserting
    # the same rows in opposite orders deadlock on PostgreSQL.
    for minute, counts in sorted(per_minute.items()):
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
    reference: str = "",
    created_by=None,
    reported_at=None,
) -> Label:
    """Record a label on a transaction and return it.

    Labels are appended, never edited: the latest one wins and the history stays
    for audit and training. The stored verdict is deliberately left untouched.
    `reference` (a chargeback's dispute id) is stored once per source.
    """
    with db_transaction.atomic():
        return Label.objects.create(
            transaction=transaction,
            is_fraud=is_fraud,
            source=source,
            note=note.strip(),
            reference=reference,
            created_by=created_by,
            reported_at=reported_at,
        )


def reason_tallies_add(*, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add the rows' reason codes to the per-minute ReasonTally (fired, and fired
    in a flagged verdict): one statement, inserting or adding to each row."""
    fired: Counter = Counter()
    flagged: Counter = Counter()
    for row in rows:
        codes = row.get("reason_codes")
        if not codes:
            continue
        minute = row["scored_at"].replace(second=0, microsecond=0)
        for code in codes.split():
            fired[minute, code] += 1
            if row["status"] != Transaction.Status.LEGIT:
                flagged[minute, code] += 1
    if not fired:
        return
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
                for (minute, code), count in sorted(fired.items())
            ],
        )
