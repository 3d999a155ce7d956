"""Consume the transactions topic as a consumer-group member, scoring inline."""

import gc

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from detection.events import VerdictsPublisher
from detection.kafka import consumer_create, kafka_topic_ensure, producer_create
from detection.stream import StreamDatabaseError, TransactionStream


class Command(BaseCommand):
    help = (
        "Consume transactions from Kafka in micro-batches, score each batch through "
        "the scoring core and store verdicts and user state in one database "
        "transaction before committing offsets. Bad records go to the DeadLetter "
        "table. Run several processes with the same --group to share partitions. "
        "SIGTERM/SIGINT finish the batch in hand and exit 0."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--topic",
            default=settings.KAFKA_TRANSACTIONS_TOPIC,
            help="Topic to consume (default: KAFKA_TRANSACTIONS_TOPIC).",
        )
        parser.add_argument(
            "--group",
            default=settings.KAFKA_CONSUMER_GROUP,
            help="Consumer group (default: KAFKA_CONSUMER_GROUP).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.STREAM_BATCH_MAX_RECORDS,
            help="Most records in a micro-batch (default: STREAM_BATCH_MAX_RECORDS).",
        )
        parser.add_argument(
            "--batch-wait-ms",
            type=int,
            default=settings.STREAM_BATCH_MAX_WAIT_MS,
            help="Max wait for a batch in ms (default: STREAM_BATCH_MAX_WAIT_MS).",
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
        parser.add_argument(
            "--no-push",
            action="store_true",
            help="Do not push live verdict events to the dashboard.",
        )

    def handle(self, *args, **options):
        if options["batch_size"] < 1 or options["batch_wait_ms"] < 0:
            raise CommandError("--batch-size must be >= 1 and --batch-wait-ms >= 0.")
        if options["max_messages"] is not None and options["max_messages"] < 1:
            raise CommandError("--max-messages must be >= 1.")
        try:
            kafka_topic_ensure(topic=options["topic"])
            consumer = consumer_create(
                group_id=options["group"], max_poll_records=options["batch_size"]
            )
            dead_letter_producer = (
                producer_create() if settings.KAFKA_DEAD_LETTER_TOPIC else None
            )
        except (ImproperlyConfigured, KafkaError, RuntimeError) as exc:
            raise CommandError(f"Kafka is not usable: {exc}") from exc
        stream = TransactionStream(
            consumer=consumer,
            topic=options["topic"],
            publisher=None if options["no_push"] else VerdictsPublisher().start(),
            dead_letter_producer=dead_letter_producer,
            dead_letter_topic=settings.KAFKA_DEAD_LETTER_TOPIC,
            batch_max_records=options["batch_size"],
            batch_max_wait_ms=options["batch_wait_ms"],
        )
        # Load rules and model, then exempt everything alive (Django, the model)
        # from garbage collection: full collections over those objects paused
        # batches for 100 ms and more (bench_stream's latency p99).
        stream.config_provider.current()
        gc.freeze()
        restore_signals = stream.signals_install()
        try:
            report = stream.run(
                stop_when_idle=options["stop_when_idle"],
                max_messages=options["max_messages"],
            )
        except StreamDatabaseError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            restore_signals()
        self.stdout.write(
            f"Consumed {report.records:,} records in {report.batches:,} batches "
            f"({report.seconds:.1f} s): {report.created:,} scored, "
            f"{report.duplicates:,} already stored, {report.dead_letters:,} dead "
            f"letters, {report.rescored} batches scored again after a concurrent "
            f"write, {report.db_retries} database retries."
        )
