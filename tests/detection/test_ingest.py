"""`manage.py ingest_file`: a backfill through the live path."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from transactions.models import Transaction

pytestmark = pytest.mark.django_db


def ingest(path) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("ingest_file", str(path), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_csv_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the first column is still
    `transaction_id`, and every row is stored."""
    source = tmp_path / "excel.csv"
    source.write_bytes(
        b"\xef\xbb\xbftransaction_id,user_id,amount,timestamp\n"
        b"bom-1,bom-user,5,2026-03-01T10:00:00Z\n"
        b"bom-2,bom-user,7.5,2026-03-01T11:00:00Z\n"
    )
    out, err = ingest(source)
    assert "Stored 2 transactions" in out, out + err
    assert set(Transaction.objects.values_list("transaction_id", flat=True)) == {
        "bom-1",
        "bom-2",
    }


def test_an_id_stored_for_another_payment_is_reported_not_skipped(tmp_path):
    """Ingesting a file again skips its payments as already stored; a line that
    reuses a stored id for another amount is reported with the reason."""
    first = tmp_path / "first.jsonl"
    first.write_text(
        '{"transaction_id": "f-1", "user_id": "u", "amount": "5.00",'
        ' "timestamp": "2026-03-01T10:00:00Z"}\n'
    )
    ingest(first)
    second = tmp_path / "second.jsonl"
    second.write_text(
        '{"transaction_id": "f-1", "user_id": "u", "amount": "500.00",'
        ' "timestamp": "2026-03-01T12:00:00Z"}\n'
    )
    out, err = ingest(first)
    assert "0 transactions; 1 already stored; 0 reusing" in out
    out, err = ingest(second)
    assert "0 transactions; 0 already stored; 1 reusing" in out
    assert "this one: amount 500.00" in err
    assert Transaction.objects.get().amount == 5


def test_ingest_says_a_directory_is_one(tmp_path):
    """A directory as input is named a directory, not a missing file."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is a directory"):
        call_command("ingest_file", str(tmp_path), stdout=StringIO())
    with pytest.raises(CommandError, match="No such input file"):
        call_command("ingest_file", str(tmp_path / "nope.jsonl"), stdout=StringIO())
