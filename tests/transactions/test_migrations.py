"""Migrations of the ledger keep what it holds."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("transactions", "0011_amount_up_to_a_trillion")
AFTER = ("transactions", "0012_amount_in_minor_units")
# Amounts a two-decimal ledger may hold, the largest among them.
AMOUNTS = ("12.50", "0.01", "100.50", "999999999999.99", "1000000000000.00")


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def _latest():
    """Return the latest migration of transactions (where the tests run)."""
    graph = MigrationExecutor(connection).loader.graph
    (leaf,) = [node for node in graph.leaf_nodes() if node[0] == "transactions"]
    return leaf


@pytest.mark.django_db(transaction=True)
def test_three_decimal_amounts_keep_the_stored_amounts_exactly():
    """Amounts stored with cents are the same amounts after the column takes 3
    decimals (12.50 is 12.500), up to 10^12; a 3-decimal one (KWD's fils)
    is then stored exactly, as is the largest below 10^12."""
    apps = _migrate(BEFORE)
    try:
        old = apps.get_model("transactions", "Transaction")
        now = datetime(2026, 3, 1, tzinfo=UTC)
        for index, amount in enumerate(AMOUNTS):
            old.objects.create(
                transaction_id=f"t-{index}",
                user_id="u",
                amount=Decimal(amount),
                amount_base=float(amount),
                timestamp=now,
                risk_score=0.1,
                status="legit",
                scored_at=now,
            )
        apps = _migrate(AFTER)
        new = apps.get_model("transactions", "Transaction")
        stored = dict(new.objects.values_list("transaction_id", "amount"))
        assert stored == {f"t-{i}": Decimal(a) for i, a in enumerate(AMOUNTS)}
        assert {str(a) for a in stored.values()} >= {"12.500", "999999999999.990"}
        row = new.objects.get(transaction_id="t-0")
        for amount in ("12.345", "999999999999.999"):
            row.amount = Decimal(amount)
            row.save(update_fields=["amount"])
            assert new.objects.get(pk=row.pk).amount == Decimal(amount)
    finally:
        _migrate(_latest())
