"""Live push of verdicts through the channel layer (channels_redis on real Redis).

Waits poll with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer

from detection.events import (
    RATE_WINDOW_SECONDS,
    VERDICTS_EVENT_MAX,
    VERDICTS_GROUP,
    VerdictsPublisher,
    verdicts_event_build,
)
from fraudsite.embedded import free_port
from tests.detection.test_stream import DEADLINE, group_new, produce, simulated
from tests.detection.test_stream_processes import consumers  # noqa: F401

EVENT_KEYS = {"type", "verdicts", "counts", "throughput", "source", "sent_at"}
VERDICT_KEYS = {
    "transaction_id",
    "user_id",
    "amount",
    "amount_base",
    "currency",
    "timestamp",
    "location",
    "country",
    "merchant_id",
    "status",
    "risk_score",
    "model_score",
    "reason_codes",
    "reasons",
    "scored_at",
}


def verdict_rows(start: int, count: int) -> list[dict]:
    """Return ledger rows of scored transactions numbered from `start`, oldest first."""
    now = datetime.now(UTC)
    reasons = [{"code": "large_amount", "label": "Large amount", "detail": "x"}]
    return [
        {
            "transaction_id": f"t-{n:06d}",
            "user_id": "u-1",
            "amount": Decimal("2500.00"),
            "amount_base": 2500.0,
            "currency": "USD",
            "timestamp": now,
            "location": "Hyderabad",
            "country": "IN",
            "merchant_id": "m-1",
            "status": ("legit", "suspicious", "fraud")[n % 3],
            "risk_score": 0.3,
            "model_score": None,
            "reasons": reasons,
            "scored_at": now,
        }
        for n in range(start, start + count)
    ]


def subscribe(layer: RedisChannelLayer) -> str:
    """Add a fresh channel to the verdicts group and return its name."""
    channel = f"test-subscriber-{uuid.uuid4().hex[:8]}"
    async_to_sync(layer.group_add)(VERDICTS_GROUP, channel)
    return channel


def events_receive(
    layer: RedisChannelLayer, channel: str, *, total: int, timeout: float
) -> list[dict]:
    """Return events from the channel until their counts add up to `total`."""

    async def receive() -> list[dict]:
        events: list[dict] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(e["counts"]["total"] for e in events) < total:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                events.append(await asyncio.wait_for(layer.receive(channel), remaining))
            except TimeoutError:
                break
            except redis.exceptions.TimeoutError:
                # redis-py's socket timeout can end the layer's blocking pop
                # before our deadline; waiting on is what the dashboard does too.
                continue
        return events

    return async_to_sync(receive)()


def test_event_matches_the_dashboard_contract():
    """Given a window of verdicts, the event carries the newest 200 first, counts
    by status over the whole window, throughput and its time of sending."""
    rows = verdict_rows(0, 250)
    newest_first = list(reversed(rows))

    event = verdicts_event_build(
        rows=newest_first,
        counts={"legit": 84, "suspicious": 83, "fraud": 83},
        throughput=1234.5,
    )

    assert set(event) == EVENT_KEYS
    assert event["type"] == "verdicts.batch"
    assert len(event["verdicts"]) == VERDICTS_EVENT_MAX
    assert event["verdicts"][0]["transaction_id"] == "t-000249"
    assert event["counts"] == {"legit": 84, "suspicious": 83, "fraud": 83, "total": 250}
    first = event["verdicts"][0]
    assert set(first) == VERDICT_KEYS
    assert first["amount"] == "2500.00" and first["amount_base"] == 2500.0
    assert first["reason_codes"] == ["large_amount"]
    assert datetime.fromisoformat(first["scored_at"]).tzinfo is not None


def test_pushed_amounts_have_their_currency_decimals():
    """The live table shows a payment's amount with its currency's decimals,
    whatever the ledger column keeps (3): 12.50 USD, 100 JPY, 12.345 KWD."""
    rows = verdict_rows(0, 3)
    for row, (amount, currency) in zip(
        rows, [("12.500", "USD"), ("100.000", "JPY"), ("12.345", "KWD")], strict=True
    ):
        row.update(amount=Decimal(amount), currency=currency)
    event = verdicts_event_build(
        rows=rows, counts={"legit": 1, "suspicious": 1, "fraud": 1}, throughput=1.0
    )
    assert [v["amount"] for v in event["verdicts"]] == ["12.50", "100", "12.345"]


def test_publisher_coalesces_batches_into_a_few_events_per_second(redis_url):
    """Given batches committed every few milliseconds for a second, the subscriber
    receives at most about four events per second that together count every
    verdict once, each with the newest verdicts first."""
    # A prefix of this test's own: other publishers on a shared Redis stay out.
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    channel = subscribe(layer)
    publisher = VerdictsPublisher(
        min_interval=0.25,
        channel_layer=RedisChannelLayer(hosts=[redis_url], prefix=prefix),
    ).start()
    added = 0
    began = time.monotonic()
    try:
        while time.monotonic() - began < 1.0:
            publisher.batches_add(verdict_rows(added, 20))
            added += 20
            # Pacing the simulated scorer (a batch every 5 ms), not synchronisation.
            time.sleep(0.005)
    finally:
        publisher.stop()

    events = events_receive(layer, channel, total=added, timeout=DEADLINE)

    assert sum(e["counts"]["total"] for e in events) == added
    assert 2 <= len(events) <= 7
    for event in events:
        ids = [v["transaction_id"] for v in event["verdicts"]]
        assert ids == sorted(ids, reverse=True)
        assert len(ids) <= VERDICTS_EVENT_MAX
        assert event["throughput"] > 0


def test_the_reported_rate_is_rows_over_a_fixed_window(monkeypatch):
    """One API verdict reads as 1 row in 5 s, not 1 row over the microseconds
    since its commit; rows older than the window no longer count."""
    clock = [1000.0]
    monkeypatch.setattr("detection.events.time.monotonic", lambda: clock[0])
    publisher = VerdictsPublisher(min_interval=0.0)  # not started: events by hand
    publisher.batches_add(verdict_rows(0, 1))
    assert publisher.event_take()["throughput"] == 1 / RATE_WINDOW_SECONDS
    clock[0] += 1.0
    publisher.batches_add(verdict_rows(1, 500))
    publisher.batches_add(verdict_rows(2, 500))
    assert publisher.event_take()["throughput"] == 1001 / RATE_WINDOW_SECONDS
    clock[0] += RATE_WINDOW_SECONDS + 0.5
    publisher.batches_add(verdict_rows(3, 10))
    assert publisher.event_take()["throughput"] == 10 / RATE_WINDOW_SECONDS
    assert publisher.event_take() is None  # nothing new since


def test_publisher_outage_never_stops_scoring(caplog):
    """Given a channel layer whose Redis is down, adding batches raises nothing,
    failures are counted and logged once (rate-limited)."""
    layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{free_port()}"])
    publisher = VerdictsPublisher(min_interval=0.0, channel_layer=layer).start()
    rows = verdict_rows(0, 500)
    caplog.set_level(logging.WARNING, logger="detection.events")
    try:
        deadline = time.monotonic() + DEADLINE
        while publisher.failed < 3 and time.monotonic() < deadline:
            publisher.batches_add(rows)
            time.sleep(0.01)  # poll interval of the deadline loop
    finally:
        publisher.stop()
    assert publisher.failed >= 3 and publisher.sent == 0
    assert len([r for r in caplog.records if "live push failed" in r.message]) == 1


def test_a_hanging_channel_layer_never_holds_up_adding_batches():
    """Given a Redis that accepts the push's connection and never answers, the
    scorer's 2,000 batch adds all return while that push is still hanging:
    adding never waits for pushing (no timing: the push is provably stuck)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)
    port = listener.getsockname()[1]
    layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{port}"])
    publisher = VerdictsPublisher(min_interval=0.0, channel_layer=layer).start()
    rows = verdict_rows(0, 500)
    hanging = None
    try:
        publisher.batches_add(rows)
        hanging, _ = listener.accept()  # the push is connected, and waits
        for _ in range(2000):
            publisher.batches_add(rows)
        assert (publisher.sent, publisher.failed) == (0, 0)
    finally:
        if hanging is not None:
            hanging.close()
        listener.close()
        publisher.stop()


@pytest.mark.kafka
@pytest.mark.django_db(transaction=True)
def test_subscriber_receives_batch_events_while_the_stream_runs(
    kafka_bootstrap,
    kafka_topic,
    redis_url,
    consumers,  # noqa: F811
):
    """Given a dashboard subscriber on the verdicts group, when a consumer process
    scores a stream, then batch events arrive while it runs and together count
    every scored transaction."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=consumers.channel_prefix)
    channel = subscribe(layer)
    records = simulated(1500, seed=31, users=150)
    # No idle exit: it runs until told to drain, so "while it runs" holds.
    process = consumers.start(kafka_topic, group_new())
    produce(kafka_bootstrap, kafka_topic, records)

    first = events_receive(layer, channel, total=1, timeout=DEADLINE)
    assert first, consumers.log(process)
    assert process.poll() is None, "the first event should arrive mid-stream"
    rest = events_receive(
        layer, channel, total=len(records) - first[0]["counts"]["total"],
        timeout=DEADLINE,
    )  # fmt: skip
    assert process.poll() is None
    process.send_signal(signal.SIGUSR1)
    assert consumers.wait(process) == 0

    events = first + rest
    assert sum(e["counts"]["total"] for e in events) == len(records)
    produced = {m["transaction_id"] for m in records}
    for event in events:
        assert set(event) == EVENT_KEYS and event["type"] == "verdicts.batch"
        assert {v["transaction_id"] for v in event["verdicts"]} <= produced
