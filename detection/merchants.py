"""Merchants with confirmed fraud lately, for the merchant_fraud rule.

Counted from labels (analysts' and chargebacks'), never from the scorer's own
verdicts (which would feed on themselves): per merchant, the transactions
confirmed as fraud within the rule's window, by when the label was given (a
chargeback arrives weeks after the payment), whose latest label still says
fraud. Labels are few, so this is a small query; it is run again only when a
label was added or the minute changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Max
from django.utils import timezone

from detection.caching import SignatureCache

_cache: SignatureCache[dict[str, int]] = SignatureCache()


def merchant_fraud_counts(*, days: float) -> dict[str, int]:
    """Return merchant_id -> transactions confirmed as fraud in the last `days`."""
    from transactions.models import Label

    now = timezone.now()
    signature = (
        *Label.objects.aggregate(count=Count("id"), newest=Max("id")).values(),
        days,
        now.replace(second=0, microsecond=0),
    )
    return _cache.get(signature, lambda: _counted(now - timedelta(days=days)))


def _counted(since: datetime) -> dict[str, int]:
    from transactions.models import Label

    counts: dict[str, int] = {}
    seen: set[int] = set()
    labels = (
        Label.objects.filter(
            transaction__in=Label.objects.filter(
                is_fraud=True, created_at__gte=since
            ).values("transaction_id")
        )
        .exclude(transaction__merchant_id="")
        .latest_first()
        .values_list("transaction_id", "transaction__merchant_id", "is_fraud")
    )
    for pk, merchant_id, is_fraud in labels:
        if pk in seen:  # an older label of a transaction already judged
            continue
        seen.add(pk)
        if is_fraud:  # its latest label: a later "legit" takes it back
            counts[merchant_id] = counts.get(merchant_id, 0) + 1
    return counts


def merchant_fraud_cache_clear() -> None:
    """Forget the counts (tests: a rolled-back database reuses label ids)."""
    _cache.clear()
