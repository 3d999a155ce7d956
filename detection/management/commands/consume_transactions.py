"""Consume the transactions topic as a consumer-group member, scoring inline."""

import gc

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from detection.events import VerdictsPublisher
from detection.management.streaming import (
    consumer_arguments_add,
    consumer_clients,
    consumer_run,
)
from detection.stream import TransactionStream


class Command(BaseCommand):
    help = (
        "Consume transactions from Kafka in micro-batches, score each batch through "
        "the scoring core and store verdicts and user state in one database "
        "transaction before committing offsets. Bad records go to the DeadLetter "
        "table. Run several processes with the same --group to share partitions. "
        "SIGTERM/SIGINT finish the batch in hand and exit 0."
    )

    def add_arguments(self, parser):
        consumer_arguments_add(
            parser,
            topic=settings.KAFKA_TRANSACTIONS_TOPIC,
            topic_setting="KAFKA_TRANSACTIONS_TOPIC",
            group=settings.KAFKA_CONSUMER_GROUP,
            group_setting="KAFKA_CONSUMER_GROUP",
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
            "--no-push",
            action="store_true",
            help="Do not push live verdict events to the dashboard.",
        )

    def handle(self, *args, **options):
        if options["batch_size"] < 1 or options["batch_wait_ms"] < 0:
            raise CommandError("--batch-size must be >= 1 and --batch-wait-ms >= 0.")
        consumer, dead_letter_producer = consumer_clients(
            options, max_poll_records=options["batch_size"]
        )
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
        report = consumer_run(stream, options)
        self.stdout.write(
            f"Consumed {report.records:,} records in {report.batches:,} batches "
            f"({report.seconds:.1f} s): {report.created:,} scored, "
            f"{report.duplicates:,} already stored, {report.dead_letters:,} dead "
            f"letters, {report.rescored} batches scored again after a concurrent "
            f"write, {report.db_retries} database retries."
        )
