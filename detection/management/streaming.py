"""What the Kafka consumer commands share: options, clients, and the run itself."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from kafka.errors import KafkaError

from detection.kafka import consumer_create, kafka_topic_ensure, producer_create
from detection.management.arguments import not_blank, topic_name
from detection.retrying import StreamDatabaseError
from detection.stream import StreamReport, TransactionStream

# The longest a dead-letter send may block the batch (the table holds the letter).
DLQ_MAX_BLOCK_MS = 5000


def consumer_arguments_add(
    parser, *, topic: str, topic_setting: str, group: str, group_setting: str
) -> None:
    """Add --topic, --group, --stop-when-idle and --max-messages."""
    parser.add_argument(
        "--topic",
        default=topic,
        type=topic_name,
        help=f"Topic to consume (default: {topic_setting}).",
    )
    parser.add_argument(
        "--group",
        default=group,
        type=not_blank,
        help=f"Consumer group (default: {group_setting}).",
    )
    parser.add_argument(
        "--stop-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Exit once the assigned partitions are caught up and quiet this long.",
    )
    parser.add_argument(
        "--max-messages",
        type=int,
        default=None,
        help="Exit after consuming this many records (good and bad).",
    )


def consumer_clients(options: dict, **consumer_options):
    """Return (consumer, dead-letter producer or None) for the options' topic and
    group, the topic made if missing; a Kafka that cannot be used is a
    CommandError."""
    if options["max_messages"] is not None and options["max_messages"] < 1:
        raise CommandError("--max-messages must be >= 1.")
    idle = options["stop_when_idle"]
    if idle is not None and not 0 <= idle < float("inf"):
        raise CommandError("--stop-when-idle must be a number of seconds >= 0.")
    try:
        kafka_topic_ensure(topic=options["topic"])
        consumer = consumer_create(group_id=options["group"], **consumer_options)
        dead_letter_producer = None
        if settings.KAFKA_DEAD_LETTER_TOPIC:
            # Made now, so that forwarding never waits for the topic's metadata
            # (up to max_block_ms) in the middle of a batch.
            kafka_topic_ensure(topic=settings.KAFKA_DEAD_LETTER_TOPIC)
            dead_letter_producer = producer_create(max_block_ms=DLQ_MAX_BLOCK_MS)
    except (ImproperlyConfigured, KafkaError, RuntimeError) as exc:
        raise CommandError(f"Kafka is not usable: {exc}") from exc
    return consumer, dead_letter_producer


def consumer_run(stream: TransactionStream, options: dict) -> StreamReport:
    """Run a stream with its signal handlers until it stops; a database that
    kept failing is a CommandError (non-zero exit, offsets not committed)."""
    restore_signals = stream.signals_install()
    try:
        return stream.run(
            stop_when_idle=options["stop_when_idle"],
            max_messages=options["max_messages"],
        )
    except StreamDatabaseError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        restore_signals()
