"""Stored verdicts for tests that need one without scoring it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from transactions.models import Transaction

HUGE_AMOUNT_REASON = {
    "code": "huge_amount",
    "label": "Huge amount",
    "weight": 0.7,
    "detail": "15,000 >= 10,000",
    "values": {"amount": 15000.0},
}


def transaction_stored(transaction_id: str, **fields) -> Transaction:
    """Store a verdict as the stream would have: by default a 15,000 USD fraud
    of card u-1, scored now, with huge_amount as its reason."""
    now = datetime.now(UTC)
    amount = Decimal(fields.pop("amount", "15000.00"))
    values = {
        "user_id": "u-1",
        "amount_base": float(amount),
        "timestamp": now,
        "risk_score": 0.95,
        "status": Transaction.Status.FRAUD,
        "reasons": [HUGE_AMOUNT_REASON],
        "reason_codes": " huge_amount ",
        "scored_at": now,
        **fields,
    }
    return Transaction.objects.create(
        transaction_id=transaction_id, amount=amount, **values
    )
