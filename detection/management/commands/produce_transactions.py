"""Stream simulated (or recorded) transactions to the Kafka transactions topic."""

import itertools
import signal
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from kafka.errors import KafkaError
from tqdm import tqdm

from detection.chargebacks import SimulatedChargebacks
from detection.kafka import (
    kafka_topic_ensure,
    producer_create,
    records_from_file,
    topic_last_records,
    transactions_produce,
)
from detection.management.arguments import number, topic_name
from detection.records import record_decode
from detection.simulator import simulate_stream
from transactions.messages import TransactionMessage, parse_timestamp
from transactions.models import Transaction

# --start after-stored: decided once the topic can be read (`_start`).
AFTER_STORED = object()


def _start(start, topic: str) -> datetime | None:
    """Return the simulated clock's start: `start` as given, or None (now), or
    for `AFTER_STORED` just after the latest payment the
    stream stored or that still waits on `topic` (the last record of each
    partition), when that is later than now, so that a simulator restarted
    before the consumer caught up does not go back in time either.
    """
    if start is not AFTER_STORED:
        return start
    now = timezone.now().replace(microsecond=0)
    stored = (
        Transaction.objects.filter(ingest_source="stream")
        .order_by("-timestamp")
        .values_list("timestamp", flat=True)
        .first()
    )
    waiting = _times(topic_last_records(topic))
    latest = max([moment for moment in [stored, *waiting] if moment], default=None)
    if latest is None or latest < now:
        return now
    return latest.replace(microsecond=0) + timedelta(seconds=1)


def _times(records) -> list[datetime]:
    """Return the event times of the records the consumer would score.

    Decoded as the consumer decodes (`record_decode`): a record that would be a
    dead letter (not JSON, dated 2150 or past TRANSACTION_MAX_FUTURE_SECONDS)
    is no clock to follow, or every simulated payment after it would be one too.
    """
    return [
        decoded.timestamp
        for decoded in map(record_decode, records)
        if isinstance(decoded, TransactionMessage)
    ]


class Command(BaseCommand):
    help = (
        "Send simulated transactions (or a JSON Lines file) to the transactions "
        "topic, keyed by user_id, at --rate per second or as fast as possible, for "
        "--count messages or until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--topic",
            default=settings.KAFKA_TRANSACTIONS_TOPIC,
            type=topic_name,
            help="Topic to write to (default: KAFKA_TRANSACTIONS_TOPIC).",
        )
        parser.add_argument(
            "--count",
            type=number(int, low=0),
            default=None,
            help="Stop after this many messages (default: run until stopped).",
        )
        parser.add_argument(
            "--rate",
            type=number(float, low=0, low_open=True, unit="messages per second"),
            default=None,
            help="Messages per second (default: as fast as possible).",
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed.")
        parser.add_argument(
            "--users",
            type=number(int, low=1),
            default=1000,
            help="Simulated cardholders.",
        )
        parser.add_argument(
            "--start",
            help="Simulated start time, ISO 8601 (default: now). Fixing it with "
            "--seed makes the transaction ids reproducible. 'after-stored': now, "
            "or just after the latest payment the stream stored or still on the "
            "topic when that is later (a restarted simulator, whose clock ran "
            "ahead of the wall clock, would otherwise send every card's payments "
            "late).",
        )
        parser.add_argument(
            "--from-file",
            help="Replay this JSON Lines file (one message per line) instead.",
        )
        parser.add_argument(
            "--chargebacks-after",
            type=number(float, low=0, unit="seconds"),
            default=None,
            metavar="SECONDS",
            help="Also send a chargeback for each record marked is_fraud, this many "
            "seconds after it, to KAFKA_CHARGEBACKS_TOPIC (default: none). A run "
            "that ends by itself waits for them; Ctrl-C drops those not yet due.",
        )

    def handle(self, *args, **options):
        count, rate = options["count"], options["rate"]
        # Also for call_command(rate=...), which skips the argument types.
        if count is not None and count < 0:
            raise CommandError("--count must be >= 0.")
        if rate is not None and rate <= 0:
            raise CommandError("--rate must be > 0.")
        delay = options["chargebacks_after"]
        if delay is not None and delay < 0:
            raise CommandError("--chargebacks-after must be >= 0.")
        if options["from_file"]:
            try:
                records = records_from_file(options["from_file"])
                records = itertools.chain([next(records)], records)
            except OSError as exc:
                raise CommandError(f"Cannot read --from-file: {exc}") from exc
            except StopIteration:
                records = iter(())
        start = None
        if options["start"] == "after-stored":
            start = AFTER_STORED
        elif options["start"] and not options["from_file"]:
            try:
                start = parse_timestamp(options["start"])
            except (ValueError, OverflowError) as exc:
                raise CommandError(
                    f"--start is not an ISO 8601 time or 'after-stored': {exc}"
                ) from exc
        try:
            kafka_topic_ensure(topic=options["topic"])
            if not options["from_file"]:
                # After the topic exists: reading a missing one would have the
                # broker create it with its own partition count.
                records = simulate_stream(
                    users=options["users"],
                    seed=options["seed"],
                    start=_start(start, options["topic"]),
                )
            chargebacks = None
            producer = producer_create()
            if delay is not None:
                kafka_topic_ensure(topic=settings.KAFKA_CHARGEBACKS_TOPIC)
                chargebacks = SimulatedChargebacks(
                    producer=producer,
                    topic=settings.KAFKA_CHARGEBACKS_TOPIC,
                    delay=delay,
                )
        except (ImproperlyConfigured, KafkaError, RuntimeError) as exc:
            raise CommandError(f"Kafka is not usable: {exc}") from exc

        # The first Ctrl-C stops sending and waits for the broker's answers;
        # a second one gives up waiting (the report then says how many are
        # unconfirmed).
        stop, abandon = threading.Event(), threading.Event()

        def stop_then_abandon(*_):
            (abandon if stop.is_set() else stop).set()

        previous = {
            sig: signal.signal(sig, stop_then_abandon)
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            with tqdm(
                total=count, desc="produce", unit="msg", disable=None
            ) as progress:
                report = transactions_produce(
                    producer=producer,
                    topic=options["topic"],
                    records=records,
                    count=count,
                    rate=rate,
                    stop=stop,
                    abandon=abandon,
                    progress=progress.update,
                    on_sent=chargebacks.observe if chargebacks else None,
                )
            if chargebacks is not None:
                chargebacks.finish(stop=stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            producer.close(timeout=10)
        self.stdout.write(
            f"Sent {report.sent:,} messages to {options['topic']} in "
            f"{report.seconds:.1f} s ({report.rate:,.0f}/s); the broker "
            f"acknowledged {report.delivered:,}."
        )
        if chargebacks is not None:
            self.stdout.write(
                f"Sent {chargebacks.sent:,} chargebacks to "
                f"{settings.KAFKA_CHARGEBACKS_TOPIC}; {chargebacks.pending:,} not "
                "yet due were dropped."
            )
        if report.failed or report.unconfirmed:
            raise CommandError(
                f"{report.failed + report.unconfirmed:,} of {report.sent:,} messages "
                f"may not be on the broker ({report.failed:,} failed, "
                f"{report.unconfirmed:,} unanswered when the wait was given up)"
                + (f"; first error: {report.first_error}" if report.first_error else "")
                + "."
            )
