"""The stream's bulk writer stores exactly what the ORM would store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection

from detection.models import UserProfile
from transactions.bulk import (
    IN_CHUNK,
    RowsInsert,
    json_text,
    key_chunks,
    rows_insert,
    values_where_in,
)
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

EVENT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def ledger_row(transaction_id: str) -> dict:
    return {
        "transaction_id": transaction_id,
        "user_id": "u-1",
        "amount": Decimal("1234.50"),
        "amount_base": 1234.5,
        "currency": "EUR",
        "timestamp": EVENT,
        "merchant_id": "m-9",
        "merchant_category": "travel",
        "channel": "ecom",
        "location": "Zürich",
        "latitude": 47.3769,
        "longitude": 8.5417,
        "country": "CH",
        "is_fraud": None,
        "risk_score": 0.731,
        "status": "suspicious",
        "reasons": [
            {"code": "amount_spike", "ratio": np.float64(12.5), "label": "Ünusual"}
        ],
        "reason_codes": " amount_spike ",
        "notes": [],
        "model_score": -0.61,
        "model_version": "iforest-x",
        "scored_at": EVENT + timedelta(seconds=2),
        "received_at": EVENT + timedelta(seconds=1),
        "ingest_source": "stream",
    }


def stored(transaction_id: str) -> dict:
    values = Transaction.objects.filter(transaction_id=transaction_id).values().get()
    values.pop("id")
    values.pop("transaction_id")
    return values


def test_rows_insert_stores_what_the_orm_stores():
    """Given the same values, rows_insert and Model.save() store equal rows."""
    Transaction(**ledger_row("orm")).save()
    rows_insert(model=Transaction, rows=[ledger_row("bulk")])
    assert stored("bulk") == stored("orm")
    assert stored("bulk")["reasons"][0]["ratio"] == 12.5
    assert stored("bulk")["timestamp"] == EVENT


def test_rows_insert_fills_defaults_and_auto_now():
    """Missing keys take the field default; auto_now columns get the time."""
    before = datetime.now(UTC)
    rows_insert(model=UserProfile, rows=[{"user_id": "u-new", "txn_count": 3}])
    profile = UserProfile.objects.get(user_id="u-new")
    assert profile.recent == [] and profile.channels == {}
    assert profile.updated_at >= before.replace(microsecond=0)


def test_rows_insert_upsert_updates_only_the_listed_fields():
    """An upsert on a unique key replaces the listed columns of the stored row."""
    rows_insert(
        model=UserProfile,
        rows=[{"user_id": "u-1", "txn_count": 1, "countries": ["FR"]}],
    )
    rows_insert(
        model=UserProfile,
        rows=[{"user_id": "u-1", "txn_count": 2, "countries": ["FR", "DE"]}],
        unique_fields=["user_id"],
        update_fields=["txn_count"],
    )
    profile = UserProfile.objects.get(user_id="u-1")
    assert (profile.txn_count, profile.countries) == (2, ["FR"])
    assert UserProfile.objects.count() == 1


def test_rows_insert_rejects_a_constraint_violation():
    """The database's own checks still apply (no silent bad rows)."""
    from django.db import IntegrityError, transaction

    bad = ledger_row("bad") | {"amount": Decimal("-1.00")}
    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert(model=Transaction, rows=[bad])
    assert not Transaction.objects.filter(transaction_id="bad").exists()


@pytest.mark.parametrize(
    "value",
    [[], {}, [[1764000000.123, 12.5]], {"pos": 3}, ["Zürich", "\u2028"], None, 1e16],
)
def test_json_text_decodes_to_what_json_dumps_decodes_to(value):
    """The fast JSON text holds the same value as the standard library's."""
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_json_text_refuses_what_json_refuses():
    """Values neither encoder knows raise TypeError, as json.dumps does."""
    with pytest.raises(TypeError):
        json_text({"amount": Decimal("1.00")})


def test_json_columns_are_text_on_sqlite_and_readable_by_sql():
    """SQLite's own JSON functions read what the fast path wrote."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite storage detail")
    rows_insert(model=Transaction, rows=[ledger_row("sql")])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT json_extract(reasons, '$[0].code') FROM transactions_transaction "
            "WHERE transaction_id = %s",
            ["sql"],
        )
        assert cursor.fetchone() == ("amount_spike",)


def test_rows_insert_writes_large_batches_whole():
    """Given more rows than one statement carries (PostgreSQL chunks them), every
    row is written, and an upsert of them all updates every one."""
    rows = [{"user_id": f"bulk-{n:05d}", "txn_count": 1} for n in range(4000)]
    rows_insert(model=UserProfile, rows=rows)
    rows_insert(
        model=UserProfile,
        rows=[dict(row, txn_count=2) for row in rows],
        unique_fields=["user_id"],
        update_fields=["txn_count"],
    )
    assert UserProfile.objects.filter(txn_count=2).count() == 4000
    ledger = [ledger_row(f"many-{n:05d}") for n in range(3000)]
    rows_insert(model=Transaction, rows=ledger)
    stored = Transaction.objects.filter(transaction_id__startswith="many-")
    assert stored.count() == 3000


def test_values_where_in_reads_what_the_orm_reads():
    """The stream's reads by key (stored ids, user versions) return the ORM's
    rows, across chunks of the IN list, with keys that are not stored."""
    rows_insert(
        model=UserProfile,
        rows=[
            {"user_id": f"u-{n}", "txn_count": n, "learned_count": n // 2}
            for n in range(1000)
        ],
    )
    keys = [f"u-{n}" for n in range(0, 2000, 2)]  # 500 stored, 500 not
    fields = ["user_id", "txn_count", "learned_count"]
    found = values_where_in(model=UserProfile, fields=fields, key="user_id", keys=keys)
    expected = UserProfile.objects.filter(user_id__in=keys).values_list(*fields)
    assert sorted(found) == sorted(expected)
    assert len(found) == 500
    assert (
        values_where_in(model=UserProfile, fields=fields, key="user_id", keys=[]) == []
    )


def test_key_chunks_split_keys_into_in_lists_of_at_most_in_chunk():
    """Every key once, in order, no list over IN_CHUNK, none for no keys."""
    keys = list(range(2 * IN_CHUNK + 1))
    chunks = list(key_chunks(keys))
    assert [len(chunk) for chunk in chunks] == [IN_CHUNK, IN_CHUNK, 1]
    assert [key for chunk in chunks for key in chunk] == keys
    assert list(key_chunks([])) == []


def test_values_where_in_refuses_columns_that_need_conversion():
    """JSON, dates and decimals come back from SQL as text: the ORM reads those."""
    with pytest.raises(ValueError, match="not a plain column"):
        values_where_in(
            model=UserProfile, fields=["countries"], key="user_id", keys=["u-1"]
        )


@pytest.mark.parametrize(
    "value",
    [
        EVENT,
        EVENT.replace(microsecond=0),
        EVENT.replace(fold=1),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        EVENT.astimezone(timezone(timedelta(hours=-5, minutes=-30))),
        None,
    ],
)
def test_datetime_columns_are_adapted_as_the_backend_adapts_them(value):
    """The ledger's datetime adapter (with its shortcut for UTC times on SQLite)
    gives the database value Django's own adaptation gives."""
    insert = RowsInsert(Transaction, using="default")
    field = Transaction._meta.get_field("timestamp")
    adapter = insert.adapters[insert.fields.index(field)]
    assert adapter(value) == connection.ops.adapt_datetimefield_value(value)
