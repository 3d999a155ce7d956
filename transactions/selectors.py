"""Reads from the ledger."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Sum

from transactions.bulk import values_where_in
from transactions.models import Transaction, VerdictTally


def transaction_ids_existing(*, transaction_ids: Iterable[str]) -> set[str]:
    """Return which of these transaction ids are already stored."""
    rows = values_where_in(
        model=Transaction,
        fields=["transaction_id"],
        key="transaction_id",
        keys=list(set(transaction_ids)),
    )
    return {transaction_id for (transaction_id,) in rows}


def transaction_get(*, transaction_id: str) -> Transaction | None:
    """Return one stored transaction, or None."""
    return Transaction.objects.filter(transaction_id=transaction_id).first()


def user_transactions_recent(*, user_id: str, limit: int = 10) -> list[Transaction]:
    """Return a user's most recent transactions by event time, newest first."""
    return list(
        Transaction.objects.for_user(user_id).order_by("-timestamp", "-id")[:limit]
    )


def verdict_totals() -> dict:
    """Return totals by status from the maintained tallies (no full-table count)."""
    sums = VerdictTally.objects.aggregate(
        total=Sum("total"),
        legit=Sum("legit"),
        suspicious=Sum("suspicious"),
        fraud=Sum("fraud"),
    )
    totals = {key: value or 0 for key, value in sums.items()}
    flagged = totals["suspicious"] + totals["fraud"]
    return {
        "total": totals["total"],
        "by_status": {
            "legit": totals["legit"],
            "suspicious": totals["suspicious"],
            "fraud": totals["fraud"],
        },
        "flagged": flagged,
        "flagged_rate": round(flagged / totals["total"], 6) if totals["total"] else 0.0,
    }


def verdicts_per_minute(*, since: datetime) -> list[dict]:
    """Return per-minute counts of verdicts scored since `since`, oldest first."""
    return list(
        VerdictTally.objects.filter(minute__gte=since)
        .order_by("minute")
        .values("minute", "total", "legit", "suspicious", "fraud")
    )


def transaction_ids_ending(*, ending: str, limit: int) -> list[str]:
    """Return up to `limit` stored transaction ids ending with `ending` (any case).

    A scan of the ids (no index serves a suffix): for the dashboard's search
    box, one request at a time, not for anything in a loop.
    """
    return list(
        Transaction.objects.filter(transaction_id__iendswith=ending)
        .order_by("-id")
        .values_list("transaction_id", flat=True)[:limit]
    )


def card_has_transactions(*, user_id: str) -> bool:
    """Return whether any stored transaction is of this card (user_id)."""
    return Transaction.objects.filter(user_id=user_id).exists()
