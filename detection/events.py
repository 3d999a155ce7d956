"""Live push of new verdicts to the dashboard through the channel layer.

Detection never imports the dashboard: it sends events to the `verdicts` group by
name, and the dashboard's websocket consumers subscribe to that group. Pushing is
best effort: a Redis outage is logged and never slows or stops scoring, because the
scorer only appends to an in-memory window that a background thread sends.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from transactions.messages import amount_text

logger = logging.getLogger(__name__)

VERDICTS_GROUP = "verdicts"
VERDICTS_EVENT_TYPE = "verdicts.batch"
# Newest verdicts carried by one event: enough to refill the dashboard's live table.
VERDICTS_EVENT_MAX = 200
STATUSES = ("legit", "suspicious", "fraud")
# A failing channel layer is reported at most this often.
FAILURE_LOG_INTERVAL_SECONDS = 60.0
# A process reports the rows it committed over this many seconds, divided by it.
RATE_WINDOW_SECONDS = 5.0


def verdict_payload(row: Mapping[str, Any]) -> dict:
    """Return one stored verdict (ledger column values) as the dashboard's JSON."""
    reasons = row["reasons"]
    return {
        "transaction_id": row["transaction_id"],
        "user_id": row["user_id"],
        # With its currency's decimals: "12.50" USD, "12.345" KWD, "100" JPY.
        "amount": amount_text(row["amount"], row["currency"]),
        "amount_base": row.get("amount_base"),
        "currency": row["currency"],
        "timestamp": row["timestamp"].isoformat(),
        "location": row["location"],
        "country": row["country"],
        # The live table filters new rows by merchant as the API does.
        "merchant_id": row["merchant_id"],
        "status": row["status"],
        "risk_score": row["risk_score"],
        "model_score": row["model_score"],
        "reason_codes": [reason["code"] for reason in reasons],
        "reasons": reasons,
        "scored_at": row["scored_at"].isoformat(),
    }


def verdicts_event_build(
    *,
    rows: Sequence[Mapping[str, Any]],
    counts: Mapping[str, int],
    throughput: float,
    sent_at: datetime | None = None,
    source: str = "",
) -> dict:
    """Return the `verdicts.batch` event for a window of committed verdicts.

    `rows` (ledger column values) are given newest first; the event carries the
    first VERDICTS_EVENT_MAX of them, and `counts` covers the whole window.
    `throughput` is the sending process's own rate and `source` names that
    process, so that a page adds up the rates of every consumer (and web server).
    """
    by_status = {status: int(counts.get(status, 0)) for status in STATUSES}
    return {
        "type": VERDICTS_EVENT_TYPE,
        "verdicts": [verdict_payload(row) for row in rows[:VERDICTS_EVENT_MAX]],
        "counts": {**by_status, "total": sum(by_status.values())},
        "throughput": round(float(throughput), 1),
        "source": source,
        "sent_at": (sent_at or datetime.now(UTC)).isoformat(),
    }


def verdicts_publish(event: dict, *, channel_layer=None) -> None:
    """Send one event to the dashboard group (raises when the layer fails)."""
    layer = channel_layer or get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(VERDICTS_GROUP, event)


class VerdictsPublisher:
    """Coalesce committed batches into at most one event per interval.

    `batches_add` runs on the scoring thread and only appends to a bounded window;
    a daemon thread sends the window when there is something new and the interval
    since the previous send has passed. When the channel layer is down the window
    is dropped (the dashboard reloads totals from the API) and scoring goes on.
    """

    def __init__(
        self, *, min_interval: float | None = None, channel_layer=None
    ) -> None:
        self.min_interval = (
            settings.STREAM_PUSH_MIN_INTERVAL_SECONDS
            if min_interval is None
            else min_interval
        )
        self.channel_layer = channel_layer
        self.source = f"{socket.gethostname()}:{os.getpid()}"
        self.sent = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._pending = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._window_reset(time.monotonic())
        # (monotonic time, rows) of the batches of the last RATE_WINDOW_SECONDS.
        self._recent: deque[tuple[float, int]] = deque()
        self._failure_logged_at = float("-inf")
        self._failures_unlogged = 0

    def _window_reset(self, now: float) -> None:
        self._newest: deque[Mapping[str, Any]] = deque(maxlen=VERDICTS_EVENT_MAX)
        self._counts: Counter[str] = Counter()
        self._last_sent = now

    def start(self) -> VerdictsPublisher:
        """Start the sending thread; return self."""
        self._thread = threading.Thread(
            target=self._run, name="verdicts-publisher", daemon=True
        )
        self._thread.start()
        return self

    def batches_add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add a committed batch of ledger rows (column values, oldest first)."""
        if not rows:
            return
        with self._lock:
            self._newest.extend(rows)
            self._counts.update(row["status"] for row in rows)
            self._recent.append((time.monotonic(), len(rows)))
        self._pending.set()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Send what is pending and stop the thread (waits at most `timeout`)."""
        self._stopping.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def event_take(self) -> dict | None:
        """Return the event for the current window and open a new one, or None."""
        now = time.monotonic()
        with self._lock:
            if not self._counts:
                return None
            newest = list(reversed(self._newest))
            counts = dict(self._counts)
            self._window_reset(now)
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_SECONDS:
                self._recent.popleft()
            # Over a fixed window: one API call is 0.2 tx/s, not 1 row divided by
            # the microseconds since its commit.
            throughput = sum(rows for _, rows in self._recent) / RATE_WINDOW_SECONDS
        return verdicts_event_build(
            rows=newest, counts=counts, throughput=throughput, source=self.source
        )

    def _run(self) -> None:
        while True:
            self._pending.wait()
            self._pending.clear()
            event = self.event_take()
            if event is not None:
                self._send(event)
            if self._stopping.is_set():
                # One last look: a batch may have landed while we were sending.
                event = self.event_take()
                if event is not None:
                    self._send(event)
                return
            # The rate limit: nothing else is sent before the interval is over.
            self._stopping.wait(self.min_interval)

    def _send(self, event: dict) -> None:
        try:
            verdicts_publish(event, channel_layer=self.channel_layer)
        except Exception:
            self.failed += 1
            self._failures_unlogged += 1
            now = time.monotonic()
            if now - self._failure_logged_at >= FAILURE_LOG_INTERVAL_SECONDS:
                logger.warning(
                    "live push failed (%d events dropped since last report); "
                    "scoring continues",
                    self._failures_unlogged,
                    exc_info=True,
                )
                self._failure_logged_at = now
                self._failures_unlogged = 0
        else:
            self.sent += 1


LABELS_EVENT_TYPE = "labels.added"


def label_payload(label) -> dict:
    """Return one label as the dashboard's JSON (as the API shows a label)."""
    return {
        "transaction_id": label.transaction.transaction_id,
        "is_fraud": label.is_fraud,
        "source": label.source,
        "note": label.note,
        "created_by": label.created_by.get_username() if label.created_by else None,
        "created_at": label.created_at.isoformat(),
    }


def labels_announce(labels: Sequence, *, channel_layer=None, wait: bool = False):
    """Tell open dashboards of new labels, so review lists drop what is done.

    Best effort, like the verdict push: sent from a daemon thread so that a slow
    or absent channel layer never holds up the request or batch that labelled;
    a failure is logged. Call it after the labels' transaction has committed.
    `wait` sends in the calling thread (tests).
    """
    if not labels:
        return
    event = {
        "type": LABELS_EVENT_TYPE,
        "labels": [label_payload(label) for label in labels],
    }

    def send() -> None:
        try:
            verdicts_publish(event, channel_layer=channel_layer)
        except Exception:
            logger.warning("could not push %d new labels", len(labels), exc_info=True)

    if wait:
        send()
    else:
        threading.Thread(target=send, name="labels-announce", daemon=True).start()
