"""Alert webhooks: flagged verdicts POSTed, signed, to the analysts' own systems.

Queueing is an outbox: `alert_deliveries_enqueue` runs inside the database
transaction that stores the verdicts (`transaction_batch_score_record`, the one
write path of the stream, the API and file ingest), so a flagged transaction is
stored with its deliveries or not at all. `alert_deliveries_send` (Celery beat,
every WEBHOOK_SEND_INTERVAL_SECONDS) claims due deliveries one by one with a
conditional update, so several workers never send one twice at once, and retries
failures with exponential backoff up to WEBHOOK_MAX_ATTEMPTS, then marks them
failed (admin: "Send now").

Delivery is at least once: a receiver deduplicates on the event `id` (a retry
resends the same id). Each request carries

    X-Fraudsite-Event-Id: <id>
    X-Fraudsite-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

and the receiver checks the signature with the webhook's secret (and refuses an
old `t`, against replays). `alert_signature_verify` is the reference check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from detection.addresses import AddressRefused, resolved_refusal, webhook_session
from detection.models import AlertDelivery, AlertWebhook

logger = logging.getLogger(__name__)

EVENT_TYPE = "transaction.flagged"
USER_AGENT = "fraudsite-webhooks/1"
RETRY_MAX_SECONDS = 6 * 3600
# Most of an answer's body read (and dropped) so that its connection is reused.
ANSWER_BODY_MAX_BYTES = 64 * 1024

# What a receiver gets of a stored verdict: the payment, the verdict and its
# reasons. Not the simulator's ground truth (is_fraud) nor ingest bookkeeping.
PAYLOAD_FIELDS = (
    "transaction_id",
    "user_id",
    "amount",
    "currency",
    "amount_base",
    "timestamp",
    "merchant_id",
    "merchant_category",
    "channel",
    "location",
    "latitude",
    "longitude",
    "country",
    "status",
    "risk_score",
    "reasons",
    "notes",
    "model_score",
    "model_version",
    "received_at",
    "scored_at",
)


def alert_webhooks_active() -> tuple[tuple[int, str], ...]:
    """Return (id, min_status) of each active webhook, for the scoring config."""
    return tuple(
        AlertWebhook.objects.filter(is_active=True).values_list("id", "min_status")
    )


def _wanted(status: str, min_status: str) -> bool:
    if status == AlertWebhook.MinStatus.FRAUD:
        return True
    return (
        status == AlertWebhook.MinStatus.SUSPICIOUS
        and min_status == AlertWebhook.MinStatus.SUSPICIOUS
    )


def alert_deliveries_enqueue(
    rows: Iterable[dict],
    webhooks: Sequence[tuple[int, str]],
    *,
    now: datetime,
) -> int:
    """Queue a delivery per (flagged ledger row, webhook that wants its status).

    Call inside the transaction that stores the rows. Returns how many.
    """
    deliveries = []
    for row in rows:
        wanted = [wid for wid, least in webhooks if _wanted(row["status"], least)]
        if not wanted:
            continue
        payload = {key: row[key] for key in PAYLOAD_FIELDS}
        if settings.SITE_URL:
            # A link for the receiver's message (Slack, a case tool).
            payload["url"] = (
                f"{settings.SITE_URL}/transactions/{quote(row['transaction_id'])}/"
            )
        deliveries.extend(
            AlertDelivery(
                webhook_id=webhook_id,
                transaction_id=row["transaction_id"],
                payload=payload,
                next_attempt_at=now,
                created_at=now,
            )
            for webhook_id in wanted
        )
    AlertDelivery.objects.bulk_create(deliveries, batch_size=500)
    return len(deliveries)


def alert_body(delivery: AlertDelivery) -> bytes:
    """Return the JSON body POSTed for a delivery (the same on every attempt)."""
    event = {
        "id": str(delivery.id),
        "type": EVENT_TYPE,
        "created": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(
        event, cls=DjangoJSONEncoder, separators=(",", ":"), sort_keys=True
    ).encode()


def alert_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Return the X-Fraudsite-Signature header value for a body sent at timestamp."""
    digest = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def alert_signature_verify(
    secret: str, header: str, body: bytes, *, tolerance_seconds: int = 300
) -> bool:
    """Return True if the header signs this body with the secret, recently."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_seconds:
        return False
    expected = alert_signature(secret, timestamp, body).split("v1=", 1)[1]
    # As bytes: compare_digest refuses str with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), given.encode())


def answer_deadline_seconds() -> float:
    """Return the longest one POST may take in all: WEBHOOK_TIMEOUT_SECONDS
    bounds each wait for bytes, so a receiver trickling its answer would
    otherwise hold a sender for as long as it likes."""
    return 2 * settings.WEBHOOK_TIMEOUT_SECONDS


def _answer_within(future: Future, seconds: float) -> tuple[int | None, str]:
    """Return a POST's outcome, or a failure once `seconds` have passed (the
    thread is left to finish on its own; its outcome is not recorded)."""
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        return None, f"No complete answer within {seconds:g} s."


def _port(url: str) -> int:
    parts = urlsplit(url)
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return 0


def alert_post(
    session: requests.Session, webhook: AlertWebhook, body: bytes, event_id: str
) -> tuple[int | None, str]:
    """POST one body; return (HTTP status or None, error text or "").

    Refused when the URL's host resolves to a metadata address, or when a
    connection reaches one (`webhook_session`, detection.addresses). The
    receiver's answer body is never kept nor shown, only its status: it could
    carry what an internal service answered.
    """
    refusal = resolved_refusal(urlsplit(webhook.url).hostname or "", _port(webhook.url))
    if refusal:
        return None, f"Refused: {refusal}"
    started = time.monotonic()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Fraudsite-Event-Id": event_id,
        "X-Fraudsite-Signature": alert_signature(
            webhook.secret, int(time.time()), body
        ),
    }
    try:
        # A redirect is an answer to fix in the webhook's URL, not to follow:
        # the body and signature would go where nobody configured.
        response = session.post(
            webhook.url,
            data=body,
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,
            stream=True,
        )
        with response:
            _body_drop(response, started + answer_deadline_seconds())
    except AddressRefused as exc:
        return None, f"Refused: {exc}"
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}"


def _body_drop(response: requests.Response, deadline: float) -> None:
    """Read and drop a bounded body by the deadline (a body read to its end
    lets the connection be reused; anything else closes it)."""
    read = 0
    for chunk in response.iter_content(8192):
        read += len(chunk)
        if read > ANSWER_BODY_MAX_BYTES or time.monotonic() > deadline:
            break


def _retry_delay(attempts: int) -> timedelta:
    # The exponent capped: past it the delay is RETRY_MAX_SECONDS anyway, and
    # 2.0 ** 1024 overflows (a high WEBHOOK_MAX_ATTEMPTS gets there).
    doubling = 2 ** min(attempts - 1, 64)
    seconds = settings.WEBHOOK_RETRY_BASE_SECONDS * doubling
    return timedelta(seconds=min(seconds, RETRY_MAX_SECONDS))


def _receiver_down(code: int | None) -> bool:
    """Return whether a failed POST says the receiver is down or overloaded
    (no answer, 5xx, 429), rather than refusing that one payload (other 4xx)."""
    return code is None or code >= 500 or code == 429


_local = threading.local()


def _session() -> requests.Session:
    """Return this sender thread's HTTP session (kept-alive connections)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = webhook_session()
    return session


def _post(delivery: AlertDelivery) -> tuple[int | None, str]:
    """POST a delivery once (in a sender thread; no database access here)."""
    return alert_post(
        _session(), delivery.webhook, alert_body(delivery), str(delivery.id)
    )


def _record(delivery: AlertDelivery, code: int | None, error: str) -> str:
    """Store one attempt's outcome; return the delivery's state after it.

    Only while the claim is this run's (`next_attempt_at` as the claim set it,
    still pending): a run whose claim ran out, or whose webhook was deleted
    meanwhile, overwrites nothing another run recorded ("superseded").
    """
    claimed_until = delivery.next_attempt_at
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_status_code = code
    delivery.last_error = error
    if not error:
        delivery.state = AlertDelivery.State.DELIVERED
        delivery.delivered_at = delivery.next_attempt_at = now
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        delivery.state = AlertDelivery.State.FAILED
        logger.warning(
            "webhook %s: gave up on %s after %d attempts: %s",
            delivery.webhook.name,
            delivery.transaction_id,
            delivery.attempts,
            error,
        )
    else:
        delivery.next_attempt_at = now + _retry_delay(delivery.attempts)
    recorded = AlertDelivery.objects.filter(
        pk=delivery.pk,
        state=AlertDelivery.State.PENDING,
        next_attempt_at=claimed_until,
    ).update(
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        state=delivery.state,
        delivered_at=delivery.delivered_at,
        next_attempt_at=delivery.next_attempt_at,
    )
    if not recorded:
        logger.warning(
            "webhook %s: the claim on %s ran out before its answer was recorded "
            "(another run has it; receivers deduplicate on the event id)",
            delivery.webhook.name,
            delivery.transaction_id,
        )
        return "superseded"
    return delivery.state


def _claim(limit: int) -> list[AlertDelivery]:
    """Claim up to `limit` due deliveries of active webhooks, oldest due first.

    A claim moves the next attempt past the request's timeout with a conditional
    update, so a concurrent sender skips it, and a sender that dies mid-request
    leaves it to be retried once the claim runs out.
    """
    due = list(
        AlertDelivery.objects.filter(
            state=AlertDelivery.State.PENDING,
            next_attempt_at__lte=timezone.now(),
            webhook__is_active=True,
        )
        .order_by("next_attempt_at")
        .values_list("pk", "next_attempt_at")[:limit]
    )
    # Held for as long as a whole batch can take (a round of first POSTs, then
    # the rest, WEBHOOK_SEND_CONCURRENCY at a time, each up to its answer
    # deadline), so that no other run claims one still waiting to be sent.
    rounds = 1 + math.ceil(limit / settings.WEBHOOK_SEND_CONCURRENCY)
    hold = timedelta(seconds=rounds * answer_deadline_seconds() + 60)
    mine = [
        pk
        for pk, due_at in due
        if AlertDelivery.objects.filter(
            pk=pk, state=AlertDelivery.State.PENDING, next_attempt_at=due_at
        ).update(next_attempt_at=timezone.now() + hold)
    ]
    return list(
        AlertDelivery.objects.filter(pk__in=mine)
        .select_related("webhook")
        .order_by("created_at")
    )


def _release(deliveries: list[AlertDelivery], until: datetime) -> None:
    """Hand claimed deliveries back unsent, due at `until` (no attempt counted)."""
    AlertDelivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
        next_attempt_at=until
    )


def alert_deliveries_send(
    *, limit: int | None = None, budget_seconds: float | None = None
) -> dict[str, int]:
    """Send due deliveries of active webhooks; count the outcomes by state.

    Claimed in batches of `limit` (WEBHOOK_SEND_BATCH), POSTed by
    WEBHOOK_SEND_CONCURRENCY threads at once, until none is due or the run has
    spent `budget_seconds` (the beat interval): a busy stream's hundreds of
    alerts a second go out as fast as receivers answer. Per webhook and batch,
    one delivery goes first: when the receiver does not answer, or answers
    5xx or 429, the webhook's others are handed back for its next retry time
    ("deferred", no attempt counted), so a dead or hanging receiver costs one
    timeout per run, not one per alert, and never holds up the other webhooks.
    A 4xx refuses that payload alone: the others are sent. Deliveries of a
    deactivated webhook wait, and go out if it is activated again. Delivered
    ones older than WEBHOOK_RETENTION_DAYS are deleted.
    """
    limit = limit or settings.WEBHOOK_SEND_BATCH
    if budget_seconds is None:
        budget_seconds = settings.WEBHOOK_SEND_INTERVAL_SECONDS
    deadline = time.monotonic() + budget_seconds
    answer_seconds = answer_deadline_seconds()
    outcomes: Counter[str] = Counter()
    pool = ThreadPoolExecutor(settings.WEBHOOK_SEND_CONCURRENCY)
    try:
        while True:
            batch = _claim(limit)
            if not batch:
                break
            by_webhook: dict[int, list[AlertDelivery]] = {}
            for delivery in batch:
                by_webhook.setdefault(delivery.webhook_id, []).append(delivery)
            probes = {
                wid: pool.submit(_post, deliveries[0])
                for wid, deliveries in by_webhook.items()
            }
            rest = []
            for wid, future in probes.items():
                first, *others = by_webhook[wid]
                code, error = _answer_within(future, answer_seconds)
                state = _record(first, code, error)
                outcomes[state] += 1
                if error and others and _receiver_down(code):
                    _release(others, first.next_attempt_at)
                    outcomes["deferred"] += len(others)
                else:
                    rest.extend(others)
            for delivery, future in [(d, pool.submit(_post, d)) for d in rest]:
                outcome = _answer_within(future, answer_seconds)
                outcomes[_record(delivery, *outcome)] += 1
            if len(batch) < limit or time.monotonic() >= deadline:
                break
    finally:
        # Not waiting for a POST given up on: it ends by itself (each wait for
        # bytes is bounded), and the run has recorded it as failed.
        pool.shutdown(wait=False, cancel_futures=True)
    _delivered_prune()
    if outcomes:
        logger.info("webhooks: %s", dict(outcomes))
    return dict(outcomes)


def _delivered_prune(chunk: int = 5000) -> int:
    """Delete up to `chunk` delivered deliveries past WEBHOOK_RETENTION_DAYS."""
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    old = AlertDelivery.objects.filter(
        state=AlertDelivery.State.DELIVERED, delivered_at__lt=cutoff
    ).values_list("pk", flat=True)[:chunk]
    deleted, _ = AlertDelivery.objects.filter(pk__in=list(old)).delete()
    return deleted


def alert_test_send(webhook: AlertWebhook) -> tuple[int | None, str]:
    """POST a sample event (type "webhook.test") to check a webhook's setup."""
    now = timezone.now()
    event = {
        "id": f"test-{int(now.timestamp())}",
        "type": "webhook.test",
        "created": now.isoformat(),
        "data": {"webhook": webhook.name},
    }
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()

    def post() -> tuple[int | None, str]:
        with webhook_session() as session:
            return alert_post(session, webhook, body, event["id"])

    pool = ThreadPoolExecutor(1)
    try:
        return _answer_within(pool.submit(post), answer_deadline_seconds())
    finally:
        pool.shutdown(wait=False)
