"""Alert webhooks: flagged verdicts queued with the verdicts (outbox), then POSTed,
signed, to a real HTTP server on loopback; failures retried with backoff, then given
up; the admin's test and retry actions."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings
from django.utils import timezone

from detection import addresses, alerts
from detection.alerts import (
    alert_deliveries_send,
    alert_signature,
    alert_signature_verify,
)
from detection.models import AlertDelivery, AlertWebhook
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from detection.tasks import alerts_send_task
from tests.db import sqlite_plan
from transactions.messages import TransactionMessage
from transactions.models import Transaction

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Receiver:
    """A loopback HTTP server that records each POST and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.status = 200
        # Transactions whose alert this receiver refuses (422), whatever status.
        self.refused: set[str] = set()
        self.location = ""
        self.delay = 0.0  # seconds each answer takes
        self.answer = b"ok"
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests.append((dict(self.headers), body))
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(
                        receiver.most_in_flight, receiver.in_flight
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow receiver, not a sync wait
                with receiver._lock:
                    receiver.in_flight -= 1
                data = json.loads(body).get("data", {})
                refused = data.get("transaction_id") in receiver.refused
                self.send_response(422 if refused else receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/fraud"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _message(tid: str, user: str, amount: str, hours: int) -> TransactionMessage:
    return TransactionMessage(
        transaction_id=tid,
        user_id=user,
        amount=Decimal(amount),
        timestamp=T0 + timedelta(hours=hours),
        location="London",
    )


# Card "a": six small payments, then 25,000 (spike + large + huge: fraud);
# card "b": 25,000 on a new card (large + huge: suspicious); card "c": legit.
MESSAGES = [_message(f"a-{i}", "a", "20.00", i) for i in range(6)] + [
    _message("a-big", "a", "25000.00", 7),
    _message("b-big", "b", "25000.00", 7),
    _message("c-1", "c", "12.00", 7),
]


def _record(messages=MESSAGES):
    return transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )


def _statuses() -> dict[str, str]:
    return dict(Transaction.objects.values_list("transaction_id", "status"))


def test_flagged_verdicts_are_queued_with_the_verdicts_per_webhook(receiver):
    fraud_only = AlertWebhook.objects.create(name="cases", url=receiver.url)
    everything = AlertWebhook.objects.create(
        name="slack", url=receiver.url, min_status="suspicious"
    )
    AlertWebhook.objects.create(name="off", url=receiver.url, is_active=False)
    _record()
    statuses = _statuses()
    assert statuses["a-big"] == "fraud"
    assert statuses["b-big"] == "suspicious"
    assert statuses["c-1"] == "legit"
    queued = set(AlertDelivery.objects.values_list("webhook__name", "transaction_id"))
    assert queued == {("cases", "a-big"), ("slack", "a-big"), ("slack", "b-big")}
    delivery = AlertDelivery.objects.get(webhook=fraud_only)
    assert delivery.state == "pending"
    assert delivery.payload["status"] == "fraud"
    assert delivery.payload["amount"] == "25000.00"
    assert {r["code"] for r in delivery.payload["reasons"]} >= {"huge_amount"}
    assert "is_fraud" not in delivery.payload
    assert "url" not in delivery.payload  # no SITE_URL, no link
    assert everything.deliveries.count() == 2

    _record()  # a replay stores nothing, so queues nothing
    assert AlertDelivery.objects.count() == 3


def test_with_site_url_an_alert_links_to_the_transaction(receiver, settings):
    settings.SITE_URL = "https://fraud.example.com"
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _record()
    assert AlertDelivery.objects.get().payload["url"] == (
        "https://fraud.example.com/transactions/a-big/"
    )


def test_no_webhook_means_no_deliveries():
    _record()
    assert _statuses()["a-big"] == "fraud"
    assert not AlertDelivery.objects.exists()


def test_a_delivery_is_posted_signed_once_and_marked_delivered(receiver):
    webhook = AlertWebhook.objects.create(name="cases", url=receiver.url)
    _record()
    outcome = alerts_send_task()  # the beat task, run in this process
    assert outcome == {"delivered": 1}
    [(headers, body)] = receiver.requests
    delivery = AlertDelivery.objects.get()
    assert headers["X-Fraudsite-Event-Id"] == str(delivery.id)
    assert headers["Content-Type"] == "application/json"
    assert alert_signature_verify(
        webhook.secret, headers["X-Fraudsite-Signature"], body
    )
    assert not alert_signature_verify(
        "another-secret", headers["X-Fraudsite-Signature"], body
    )
    event = json.loads(body)
    assert event["id"] == str(delivery.id)
    assert event["type"] == "transaction.flagged"
    assert event["data"]["transaction_id"] == "a-big"
    assert event["data"]["status"] == "fraud"
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (
        "delivered",
        1,
        200,
    )
    assert delivery.delivered_at is not None

    assert alert_deliveries_send() == {}  # nothing is sent twice
    assert len(receiver.requests) == 1


def test_a_failure_is_retried_later_then_given_up(receiver):
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _record()
    receiver.status = 500
    receiver.answer = b"instance-secret-token: AKIA-EXAMPLE"
    with override_settings(WEBHOOK_MAX_ATTEMPTS=2, WEBHOOK_RETRY_BASE_SECONDS=30):
        before = timezone.now()
        assert alert_deliveries_send() == {"pending": 1}
        delivery = AlertDelivery.objects.get()
        assert delivery.attempts == 1
        # The status only: an answer's body could carry what an internal
        # service said, and Viewers read last_error.
        assert delivery.last_error == "HTTP 500"
        assert delivery.next_attempt_at >= before + timedelta(seconds=30)

        assert alert_deliveries_send() == {}  # not due yet: not sent
        assert len(receiver.requests) == 1

        AlertDelivery.objects.update(next_attempt_at=timezone.now())
        assert alert_deliveries_send() == {"failed": 1}
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("failed", 2)
    assert len(receiver.requests) == 2


def test_a_redirect_is_an_error_not_followed(receiver):
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _record()
    receiver.status = 302
    receiver.location = "http://127.0.0.1:9/elsewhere"
    assert alert_deliveries_send() == {"pending": 1}
    assert AlertDelivery.objects.get().last_error.startswith("HTTP 302")
    assert len(receiver.requests) == 1


def test_an_unreachable_endpoint_is_recorded_and_retried(receiver):
    url = receiver.url
    receiver.close()  # nothing listens there now
    AlertWebhook.objects.create(name="gone", url=url)
    _record()
    assert alert_deliveries_send() == {"pending": 1}
    assert "ConnectionError" in AlertDelivery.objects.get().last_error


def test_deliveries_of_a_deactivated_webhook_wait(receiver):
    webhook = AlertWebhook.objects.create(name="cases", url=receiver.url)
    _record()
    AlertWebhook.objects.filter(pk=webhook.pk).update(is_active=False)
    assert alert_deliveries_send() == {}
    assert AlertDelivery.objects.get().state == "pending"
    AlertWebhook.objects.filter(pk=webhook.pk).update(is_active=True)
    assert alert_deliveries_send() == {"delivered": 1}


def test_a_delivery_another_sender_claimed_is_skipped(receiver):
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _record()
    claimed_until = timezone.now() + timedelta(minutes=1)
    AlertDelivery.objects.update(next_attempt_at=claimed_until)
    assert alert_deliveries_send() == {}
    assert receiver.requests == []


def test_signature_check_refuses_old_or_tampered_bodies():
    body = b'{"id":"x"}'
    fresh = alert_signature("s3cret", int(time.time()), body)
    assert alert_signature_verify("s3cret", fresh, body)
    assert not alert_signature_verify("s3cret", fresh, body + b" ")
    old = alert_signature("s3cret", int(time.time()) - 3600, body)
    assert not alert_signature_verify("s3cret", old, body)
    assert not alert_signature_verify("s3cret", "garbage", body)


def test_predict_queues_an_alert_too(api_client, receiver):
    AlertWebhook.objects.create(name="slack", url=receiver.url, min_status="suspicious")
    response = api_client.post(
        "/api/predict",
        {"transaction_id": "api-big", "user_id": "z", "amount": "25000.00"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] in {"suspicious", "fraud"}
    assert AlertDelivery.objects.get().transaction_id == "api-big"


def test_admin_sends_a_test_event_and_retries_failed_ones(admin_client, receiver):
    webhook = AlertWebhook.objects.create(name="cases", url=receiver.url)
    page = admin_client.post(
        "/admin/detection/alertwebhook/",
        {"action": "send_test", "_selected_action": [webhook.pk], "index": "0"},
        follow=True,
    )
    assert [str(m) for m in page.context["messages"]] == ["cases: answered HTTP 200"]
    [(headers, body)] = receiver.requests
    assert json.loads(body)["type"] == "webhook.test"
    assert alert_signature_verify(
        webhook.secret, headers["X-Fraudsite-Signature"], body
    )

    _record()
    AlertDelivery.objects.update(state="failed", attempts=10)
    delivery = AlertDelivery.objects.get()
    admin_client.post(
        "/admin/detection/alertdelivery/",
        {"action": "retry_now", "_selected_action": [str(delivery.pk)], "index": "0"},
    )
    delivery.refresh_from_db()
    assert delivery.state == "pending"
    assert alert_deliveries_send() == {"delivered": 1}
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == delivery.delivered_at  # nothing scheduled

    # Waiting out a backoff (tried once): sent now. Never tried (perhaps in
    # flight this very moment): left to its schedule.
    later = timezone.now() + timedelta(hours=1)
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        state="pending", attempts=1, next_attempt_at=later
    )
    fresh = AlertDelivery.objects.create(
        webhook=webhook,
        transaction_id="x",
        payload={},
        next_attempt_at=later,
        created_at=timezone.now(),
    )
    admin_client.post(
        "/admin/detection/alertdelivery/",
        {
            "action": "retry_now",
            "_selected_action": [str(delivery.pk), str(fresh.pk)],
            "index": "0",
        },
    )
    delivery.refresh_from_db()
    fresh.refresh_from_db()
    assert delivery.next_attempt_at <= timezone.now() < fresh.next_attempt_at
    listing = admin_client.get("/admin/detection/alertwebhook/")
    assert listing.status_code == 200
    # Webhooks are deactivated, not deleted: their deliveries stay on record.
    refused = admin_client.post(f"/admin/detection/alertwebhook/{webhook.pk}/delete/")
    assert refused.status_code == 403
    assert AlertWebhook.objects.filter(pk=webhook.pk).exists()


def _flagged(count: int, prefix: str = "f") -> None:
    """Store `count` fraud verdicts (huge amounts on cards with some history)."""
    messages = []
    for n in range(count):
        card = f"{prefix}-card-{n}"
        messages += [_message(f"{card}-{i}", card, "20.00", i) for i in range(6)]
        messages.append(_message(f"{card}-big", card, "25000.00", 7))
    _record(messages)


def test_deliveries_go_out_several_at_once(receiver):
    """A busy stream flags hundreds a second: the sender POSTs concurrently
    (WEBHOOK_SEND_CONCURRENCY), in as many claimed batches as are due."""
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _flagged(12)
    receiver.delay = 0.2
    with override_settings(WEBHOOK_SEND_BATCH=5, WEBHOOK_SEND_CONCURRENCY=4):
        assert alert_deliveries_send(budget_seconds=60) == {"delivered": 12}
    assert receiver.most_in_flight >= 2
    assert len({json.loads(body)["id"] for _, body in receiver.requests}) == 12


def test_a_hanging_receiver_costs_one_timeout_and_holds_up_no_one(receiver):
    """One delivery per webhook goes first: when it times out, the webhook's
    others are handed back unsent (no attempt counted) for its retry time, and
    the healthy webhook's alerts all go out in the same run."""
    hanging = Receiver()
    hanging.delay = 3.0
    try:
        AlertWebhook.objects.create(name="slow", url=hanging.url)
        AlertWebhook.objects.create(name="fine", url=receiver.url)
        _flagged(4)
        with override_settings(WEBHOOK_TIMEOUT_SECONDS=0.5):
            outcome = alert_deliveries_send(budget_seconds=60)
        assert outcome == {"delivered": 4, "pending": 1, "deferred": 3}
        assert len(hanging.requests) == 1
        slow = AlertDelivery.objects.filter(webhook__name="slow")
        assert sorted(slow.values_list("attempts", flat=True)) == [0, 0, 0, 1]
        assert not slow.filter(next_attempt_at__lte=timezone.now()).exists()
        assert "ReadTimeout" in slow.get(attempts=1).last_error
    finally:
        hanging.close()


def test_a_payload_the_receiver_refuses_holds_up_none_of_the_others(receiver):
    """A 4xx is that payload's (a receiver's validation), not the receiver
    down: whichever delivery goes first, the webhook's others are sent in the
    same run, and only the refused one waits for a retry."""
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _flagged(4)
    oldest = AlertDelivery.objects.order_by("created_at", "pk").first()
    receiver.refused = {oldest.transaction_id}
    assert alert_deliveries_send(budget_seconds=60) == {"delivered": 3, "pending": 1}
    refused = AlertDelivery.objects.get(pk=oldest.pk)
    assert (refused.attempts, refused.last_error) == (1, "HTTP 422")
    assert len(receiver.requests) == 4


def test_an_answer_after_the_claim_ran_out_overwrites_nothing(receiver):
    """A run whose claim ran out (another run claimed the delivery since) or
    whose webhook was deleted meanwhile records nothing: the other run's
    outcome stands, and the run goes on."""
    from detection.alerts import _claim, _record

    webhook = AlertWebhook.objects.create(name="cases", url=receiver.url)
    _flagged(2)
    first, second = _claim(10)
    later = timezone.now() + timedelta(minutes=5)
    AlertDelivery.objects.filter(pk=first.pk).update(next_attempt_at=later)
    assert _record(first, None, "ConnectionError: gone") == "superseded"
    first.refresh_from_db()
    assert (first.attempts, first.last_error, first.next_attempt_at) == (0, "", later)
    AlertWebhook.objects.filter(pk=webhook.pk).delete()
    assert _record(second, 200, "") == "superseded"


def test_retry_delays_and_signature_checks_survive_odd_inputs(settings):
    """A very high attempt count waits the longest delay (2.0 ** 1024
    overflowed), and a signature header with non-ASCII text is refused, not
    an error."""
    from detection.alerts import RETRY_MAX_SECONDS, _retry_delay

    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    assert _retry_delay(1) == timedelta(seconds=30)
    assert _retry_delay(5000) == timedelta(seconds=RETRY_MAX_SECONDS)
    body = b'{"id":"x"}'
    header = alert_signature("s3cret", int(time.time()), body) + "\u00e9"
    assert alert_signature_verify("s3cret", header, body) is False


class TricklingReceiver:
    """A loopback server that answers a POST with one header line at a time,
    each within the read timeout, for as long as the client listens (up to
    `seconds`): a receiver that would hold a sender for ever."""

    def __init__(self, *, interval: float, seconds: float = 30.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.interval, self.seconds = interval, seconds
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            with client:
                client.recv(65536)
                client.sendall(b"HTTP/1.1 200 OK\r\n")
                deadline = time.monotonic() + self.seconds
                line = 0
                while time.monotonic() < deadline and not self.closed.is_set():
                    client.sendall(f"X-Slow-{line}: 1\r\n".encode())
                    line += 1
                    self.closed.wait(self.interval)  # pacing the trickle

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        self.thread.join(timeout=5)


def test_a_trickling_receiver_is_given_up_at_the_total_deadline(receiver):
    """A receiver that sends its answer a line at a time, each within the read
    timeout, is given up after 2 x WEBHOOK_TIMEOUT_SECONDS in all, recorded as
    failed, and the other webhook's alerts still go out in the same run."""
    trickling = TricklingReceiver(interval=0.2)
    try:
        AlertWebhook.objects.create(name="trickle", url=trickling.url)
        AlertWebhook.objects.create(name="fine", url=receiver.url)
        _flagged(2)
        with override_settings(WEBHOOK_TIMEOUT_SECONDS=0.5):
            outcome = alert_deliveries_send(budget_seconds=60)
        assert outcome == {"delivered": 2, "pending": 1, "deferred": 1}
        given_up = AlertDelivery.objects.get(webhook__name="trickle", attempts=1)
        assert given_up.last_error == "No complete answer within 1 s."
    finally:
        trickling.close()


def test_a_webhook_stored_with_a_metadata_address_is_refused_when_sending(
    receiver,
):
    """A webhook whose address is a metadata service's however it got stored
    (saved before the check, written to the table directly) is refused before
    any connection, at every send."""
    AlertWebhook.objects.create(
        name="probe", url="http://[::ffff:169.254.169.254]/latest/meta-data/"
    )
    _flagged(1)
    assert alert_deliveries_send() == {"pending": 1}
    error = AlertDelivery.objects.get().last_error
    assert error.startswith("Refused: ") and "metadata" in error


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_name_that_reaches_a_metadata_address_is_refused_at_the_connection(
    receiver, monkeypatch, scheme
):
    """The address a connection reached is checked, not a DNS answer read
    beforehand: a name that answers a safe address to a first lookup and a
    metadata one to the connection's own (DNS rebinding) gets nothing. Here
    "localhost" reaches 127.0.0.1, which the test declares forbidden; over
    HTTPS the refusal comes before the TLS handshake."""
    forbidden = addresses.address_forbidden
    # The lookup before the POST got a safe answer...
    monkeypatch.setattr(alerts, "resolved_refusal", lambda host, port: "")
    # ...and the connection's own reaches an address declared forbidden.
    monkeypatch.setattr(
        addresses,
        "address_forbidden",
        lambda address: str(address) == "127.0.0.1" or forbidden(address),
    )
    AlertWebhook.objects.create(
        name="rebound",
        url=receiver.url.replace("http://127.0.0.1", f"{scheme}://localhost"),
    )
    _flagged(1)
    assert alert_deliveries_send() == {"pending": 1}
    error = AlertDelivery.objects.get().last_error
    assert error == (
        "Refused: localhost resolves to 127.0.0.1, a link-local or metadata address."
    )
    assert receiver.requests == []


def test_delivered_alerts_are_deleted_after_the_retention(receiver):
    AlertWebhook.objects.create(name="cases", url=receiver.url)
    _flagged(2)
    assert alert_deliveries_send() == {"delivered": 2}
    old, kept = AlertDelivery.objects.order_by("pk")
    long_ago = timezone.now() - timedelta(days=31)
    AlertDelivery.objects.filter(pk=old.pk).update(delivered_at=long_ago)
    # A failed one stays whatever its age: someone should look at it.
    AlertDelivery.objects.filter(pk=kept.pk).update(
        state="failed", created_at=long_ago, delivered_at=None
    )
    alert_deliveries_send()
    assert list(AlertDelivery.objects.values_list("pk", flat=True)) == [kept.pk]


def test_the_secrets_help_reads_whole_in_admin(admin_client):
    """Admin renders help text as HTML: the signature's description must not use
    angle brackets, or its placeholders vanish."""
    page = admin_client.get("/admin/detection/alertwebhook/add/").content.decode()
    assert "t=T,v1=S where T is the Unix time of sending" in page


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        # The same places written otherwise (IPv4-mapped, trailing dot, NAT64),
        # and metadata services outside the link-local ranges.
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://metadata.google.internal./computeMetadata/v1/",
        "http://[64:ff9b::a9fe:a9fe]/latest/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
    ],
)
def test_admin_refuses_cloud_metadata_addresses(admin_client, url):
    page = admin_client.post(
        "/admin/detection/alertwebhook/add/",
        {"name": "probe", "url": url, "secret": "s", "min_status": "fraud"},
    )
    assert page.status_code == 200
    assert "link-local or cloud metadata address" in page.content.decode()
    assert not AlertWebhook.objects.exists()


def _deliveries(pairs, *, minutes_apart: int = 0) -> None:
    """Store a delivery per (webhook, state), each `minutes_apart` older."""
    now = timezone.now()
    AlertDelivery.objects.bulk_create(
        AlertDelivery(
            webhook=webhook,
            transaction_id=f"t-{n}",
            payload={},
            state=state,
            next_attempt_at=now,
            created_at=now - timedelta(minutes=n * minutes_apart),
        )
        for n, (webhook, state) in enumerate(pairs)
    )


def test_webhook_list_counts_pending_and_failed_by_index(admin_client):
    """Each webhook's pending and failed deliveries are counted (delivered
    ones are not), without a scan of the deliveries (SQLite's query plan)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    busy = AlertWebhook.objects.create(name="busy", url="https://busy.test/hook")
    quiet = AlertWebhook.objects.create(name="quiet", url="https://quiet.test/hook")
    AlertWebhook.objects.create(name="idle", url="https://idle.test/hook")
    states = [(busy, "pending")] * 2 + [(busy, "failed")] + [(busy, "delivered")] * 3
    _deliveries([*states, (quiet, "pending")])
    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get("/admin/detection/alertwebhook/")
    assert listing.status_code == 200
    counts = {
        webhook.name: (webhook.pending_count, webhook.failed_count)
        for webhook in listing.context["cl"].result_list
    }
    assert counts == {"busy": (2, 1), "quiet": (1, 0), "idle": (0, 0)}
    if connection.vendor == "sqlite":
        counting = [q["sql"] for q in queries if "detection_alertdelivery" in q["sql"]]
        assert counting
        for sql in counting:
            plan = sqlite_plan(sql)
            # Each count reads only its (webhook, state) range of the index,
            # not every delivery the webhook ever had.
            steps = [s for s in plan if "alertdelivery" in s or " U0 " in s]
            assert steps and all(
                "INDEX alert_delivery_webhook (webhook_id=? AND state=?)" in step
                for step in steps
            ), plan


def test_delivery_list_reads_newest_first_by_index(admin_client):
    """The deliveries list (newest first; a month of them, and every failed
    one, are kept) reads its page from the created_at index instead of sorting
    every delivery."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plan")
    webhook = AlertWebhook.objects.create(name="w", url="https://w.test/hook")
    _deliveries([(webhook, "pending")] * 3, minutes_apart=1)
    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get("/admin/detection/alertdelivery/")
    assert listing.status_code == 200
    ordered = 'ORDER BY "detection_alertdelivery"'
    page = [q["sql"] for q in queries if ordered in q["sql"]]
    assert page
    plan = sqlite_plan(page[0])
    assert not any("TEMP B-TREE FOR ORDER BY" in step for step in plan), plan
    assert any("alert_delivery_recent" in step for step in plan), plan


def test_delivery_pages_show_the_error_and_offer_no_save(admin_client):
    """The list shows each delivery's last error; a delivery's page is a
    record (every field read-only), without Save buttons."""
    webhook = AlertWebhook.objects.create(name="w", url="https://w.test/hook")
    delivery = AlertDelivery.objects.create(
        webhook=webhook,
        transaction_id="t-err",
        payload={},
        state="failed",
        attempts=8,
        last_status_code=503,
        last_error="HTTP 503 from the receiver: Service Unavailable",
        next_attempt_at=timezone.now(),
        created_at=timezone.now(),
    )
    listing = admin_client.get("/admin/detection/alertdelivery/").content.decode()
    assert "HTTP 503 from the receiver: Service Unavailable" in listing
    page = admin_client.get(f"/admin/detection/alertdelivery/{delivery.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "<h1>Alert delivery</h1>" in html
    assert 'name="_save"' not in html and 'name="_continue"' not in html


def test_a_name_that_resolves_to_a_metadata_address_is_refused_before_connecting(
    monkeypatch,
):
    """The lookup before each POST: a name with any answer in a metadata range
    (here the second of two) is refused without connecting."""
    answers = [
        (addresses.socket.AF_INET, 1, 6, "", ("192.0.2.10", 80)),
        (addresses.socket.AF_INET6, 1, 6, "", ("fe80::1%eth0", 80, 0, 2)),
    ]
    monkeypatch.setattr(addresses.socket, "getaddrinfo", lambda *a, **k: answers)
    assert addresses.resolved_refusal("hooks.example", 80) == (
        "hooks.example resolves to fe80::1, a link-local or metadata address."
    )
    monkeypatch.setattr(addresses.socket, "getaddrinfo", lambda *a, **k: answers[:1])
    assert addresses.resolved_refusal("hooks.example", 80) == ""
