"""Dead letters can be scored again once the cause is fixed; nothing is deleted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from detection.models import DeadLetter, UserProfile
from tests.db import sqlite_plan
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

RECEIVED = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def message(transaction_id: str, user_id: str = "redrive-user") -> bytes:
    return json.dumps(
        {
            "transaction_id": transaction_id,
            "user_id": user_id,
            "amount": "25.00",
            "timestamp": "2026-06-01T07:59:00Z",
            "location": "Lyon",
        }
    ).encode()


def letter(raw: bytes, offset: int, error: str = "Invalid message: {}") -> DeadLetter:
    return DeadLetter.objects.create(
        raw_value=raw,
        raw_preview=raw[:2000].decode(errors="replace"),
        error=error,
        topic="transactions",
        partition=0,
        offset=offset,
        received_at=RECEIVED,
    )


def redrive(*args: str) -> str:
    out = StringIO()
    call_command("redrive_dead_letters", *args, stdout=out)
    return out.getvalue()


def test_redrive_scores_valid_letters_and_keeps_the_rest(tmp_path):
    """Given a letter that is valid now, a garbage one and one already stored, the
    valid one is scored and resolved, the garbage one stays with its new error, the
    stored one is resolved without a second row; a second run changes nothing."""
    valid = letter(message("rd-1"), 1)
    garbage = letter(b"\xff not json", 2, error="Not JSON: old")
    history = tmp_path / "stored.jsonl"
    history.write_bytes(message("rd-2") + b"\n")
    call_command("ingest_file", str(history), stdout=StringIO())
    stored_twice = letter(message("rd-2"), 3)

    output = redrive()

    assert "3 dead letters: 1 scored, 1 already stored, 1 still invalid" in output
    txn = Transaction.objects.get(transaction_id="rd-1")
    assert txn.ingest_source == "redrive" and txn.received_at == RECEIVED
    assert Transaction.objects.filter(transaction_id="rd-2").count() == 1
    valid.refresh_from_db()
    garbage.refresh_from_db()
    stored_twice.refresh_from_db()
    assert valid.resolved_at is not None and valid.resolution == "Scored as rd-1."
    assert stored_twice.resolved_at is not None
    assert stored_twice.resolution == "Already stored as rd-2."
    assert garbage.resolved_at is None
    assert garbage.resolution.startswith("Still invalid: Not JSON")
    assert bytes(garbage.raw_value) == b"\xff not json"
    assert UserProfile.objects.get(user_id="redrive-user").txn_count == 2

    again = redrive()

    assert "1 dead letters: 0 scored, 0 already stored, 1 still invalid" in again
    assert UserProfile.objects.get(user_id="redrive-user").txn_count == 2
    assert DeadLetter.objects.count() == 3


def test_redrive_by_id_and_unknown_ids():
    """--id redrives only that letter; an id with nothing unresolved is an error."""
    first, second = letter(message("rd-a"), 10), letter(message("rd-b"), 11)
    assert "1 scored" in redrive("--id", str(second.id))
    assert not Transaction.objects.filter(transaction_id="rd-a").exists()
    first.refresh_from_db()
    assert first.resolved_at is None
    with pytest.raises(CommandError, match="No unresolved dead letter"):
        redrive("--id", str(second.id))


def test_admin_action_redrives_the_selected_letters(client, staff_user):
    """The DeadLetter admin's action scores the selected letters and says so."""
    target = letter(message("rd-admin"), 20)
    client.force_login(staff_user)
    response = client.post(
        "/admin/detection/deadletter/",
        {"action": "redrive", "_selected_action": [target.id]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 scored, 0 already stored, 0 still invalid" in response.content.decode()
    target.refresh_from_db()
    assert target.resolution == "Scored as rd-admin."
    assert Transaction.objects.filter(transaction_id="rd-admin").exists()


def test_admin_reads_raw_records_only_to_redrive_them(client, staff_user):
    """The list leaves the raw records (up to a broker's message size each)
    unread; the redrive of three letters reads theirs in one query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    targets = [letter(message(f"rd-raw-{n}"), 30 + n) for n in range(3)]
    client.force_login(staff_user)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/detection/deadletter/").status_code == 200
    reads = [q["sql"] for q in queries if "detection_deadletter" in q["sql"]]
    assert reads and not any("raw_value" in sql for sql in reads)
    with CaptureQueriesContext(connection) as queries:
        client.post(
            "/admin/detection/deadletter/",
            {"action": "redrive", "_selected_action": [t.id for t in targets]},
        )
    raw_reads = [
        q["sql"]
        for q in queries
        if q["sql"].startswith("SELECT") and "raw_value" in q["sql"]
    ]
    assert len(raw_reads) == 1
    assert Transaction.objects.filter(transaction_id__startswith="rd-raw-").count() == 3


def test_redrive_keeps_the_live_limit_on_future_timestamps(settings):
    """With TRANSACTION_MAX_FUTURE_SECONDS set, a letter dated beyond it stays a
    dead letter on redrive, as the stream would have refused it."""
    settings.TRANSACTION_MAX_FUTURE_SECONDS = 3600
    ahead = json.loads(message("rd-future"))
    ahead["timestamp"] = "2099-01-01T00:00:00Z"
    future = letter(json.dumps(ahead).encode(), 7)
    redrive()
    future.refresh_from_db()
    assert future.resolved_at is None
    assert "TRANSACTION_MAX_FUTURE_SECONDS" in future.resolution
    assert not Transaction.objects.filter(transaction_id="rd-future").exists()


def test_redrive_is_offered_only_with_its_permission(client, django_user_model):
    """Redrive writes transactions: staff who may only view dead letters see no
    Redrive action, and posting it anyway stores nothing."""
    from django.contrib.auth.models import Permission

    target = letter(message("rd-viewer"), 21)
    viewer = django_user_model.objects.create_user(
        username="letters-viewer", password="correct-horse-battery", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(viewer)
    listing = client.get("/admin/detection/deadletter/")
    assert listing.status_code == 200
    assert 'value="redrive"' not in listing.content.decode()
    client.post(
        "/admin/detection/deadletter/",
        {"action": "redrive", "_selected_action": [target.id]},
    )
    target.refresh_from_db()
    assert target.resolved_at is None
    assert not Transaction.objects.filter(transaction_id="rd-viewer").exists()


def test_a_letter_reusing_the_id_of_another_payment_stays_unresolved(tmp_path):
    """A letter whose id is stored for another card is not "already stored": it
    stays pending with the reason, and the redrive reports it."""
    history = tmp_path / "stored.jsonl"
    history.write_bytes(message("rd-9") + b"\n")
    call_command("ingest_file", str(history), stdout=StringIO())
    reused = letter(message("rd-9", user_id="another-card"), 5)
    out = redrive()
    assert "1 reusing the id of another payment" in out
    reused.refresh_from_db()
    assert reused.resolved_at is None
    assert "this one: user_id another-card" in reused.resolution


def test_a_letter_no_fix_will_make_valid_can_be_dismissed(client, django_user_model):
    """Garbage stays invalid at every redrive: a user who may change dead letters
    (Risk admin) dismisses it, so it no longer counts as waiting, and the
    record stays with who dismissed it; one who may only view cannot."""
    from django.contrib.auth.models import Permission

    from dashboard.selectors import dead_letters_unresolved_count

    garbage = letter(b"{not json", 30, error="Not JSON")
    viewer = django_user_model.objects.create_user(
        username="letters-viewer", password="correct-horse-battery", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(viewer)
    assert (
        'value="dismiss"'
        not in client.get("/admin/detection/deadletter/").content.decode()
    )
    client.post(
        "/admin/detection/deadletter/",
        {"action": "dismiss", "_selected_action": [garbage.id]},
    )
    assert dead_letters_unresolved_count() == 1

    viewer.user_permissions.add(Permission.objects.get(codename="change_deadletter"))
    response = client.post(
        "/admin/detection/deadletter/",
        {"action": "dismiss", "_selected_action": [garbage.id]},
        follow=True,
    )
    assert "1 dead letter dismissed." in response.content.decode()
    garbage.refresh_from_db()
    assert garbage.resolved_at is not None
    assert garbage.resolution == "Dismissed by letters-viewer: not to be scored."
    assert dead_letters_unresolved_count() == 0
    assert bytes(garbage.raw_value) == b"{not json"


def test_waiting_letters_are_read_by_their_own_index():
    """The overview's count of unresolved letters, and the redrive's and the
    admin's reads of them, use the partial index of unresolved letters
    instead of reading every letter ever kept (SQLite's query plan)."""
    from django.db import connection

    from dashboard.selectors import dead_letters_unresolved_count

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plan")
    letter(message("rd-wait"), 40)
    done = letter(message("rd-done"), 41)
    DeadLetter.objects.filter(pk=done.pk).update(resolved_at=RECEIVED)
    assert dead_letters_unresolved_count() == 1
    waiting = DeadLetter.objects.filter(resolved_at__isnull=True)
    for queryset in (waiting.values("id"), waiting.order_by("id").values("id")):
        sql, params = queryset.query.sql_with_params()
        plan = sqlite_plan(sql, params)
        assert any("INDEX dead_letter_unresolved" in step for step in plan), plan


@pytest.mark.parametrize("bad", ["99999999999999999999999", str(2**63), "0", "x"])
def test_redrive_refuses_an_id_no_row_can_have(bad):
    """An --id outside a 64-bit signed id's range is a command error, not the
    database's OverflowError."""
    with pytest.raises(CommandError, match="whole number from 1 to"):
        call_command("redrive_dead_letters", "--id", bad, stdout=StringIO())
