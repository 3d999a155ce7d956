"""Consume the chargebacks topic as a consumer-group member, labelling payments."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from detection.chargebacks import ChargebackStream
from detection.kafka import consumer_create, kafka_topic_ensure, producer_create
from detection.stream import StreamDatabaseError


class Command(BaseCommand):
    help = (
        "Consume chargebacks (JSON: transaction_id, is_fraud (default true), "
        "dispute_id, reason_code, note) and label the stored transactions they "
        "name, source 'chargeback'. A replayed report labels once; a report on a "
        "transaction that is not stored, or a bad record, goes to the DeadLetter "
        "table. SIGTERM/SIGINT finish the batch in hand and exit 0."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--topic",
            default=settings.KAFKA_CHARGEBACKS_TOPIC,
            help="Topic to consume (default: KAFKA_CHARGEBACKS_TOPIC).",
        )
        parser.add_argument(
            "--group",
            default=settings.KAFKA_CHARGEBACKS_GROUP,
            help="Consumer group (default: KAFKA_CHARGEBACKS_GROUP).",
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

    def handle(self, *args, **options):
        if options["max_messages"] is not None and options["max_messages"] < 1:
            raise CommandError("--max-messages must be >= 1.")
        try:
            kafka_topic_ensure(topic=options["topic"])
            consumer = consumer_create(group_id=options["group"])
            dead_letter_producer = (
                producer_create() if settings.KAFKA_DEAD_LETTER_TOPIC else None
            )
        except (ImproperlyConfigured, KafkaError, RuntimeError) as exc:
            raise CommandError(f"Kafka is not usable: {exc}") from exc
        stream = ChargebackStream(
            consumer=consumer,
            topic=options["topic"],
            dead_letter_producer=dead_letter_producer,
            dead_letter_topic=settings.KAFKA_DEAD_LETTER_TOPIC,
        )
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
            f"Consumed {report.records:,} chargeback records in {report.batches:,} "
            f"batches ({report.seconds:.1f} s): {report.created:,} labelled, "
            f"{report.duplicates:,} already labelled, {report.dead_letters:,} dead "
            f"letters, {report.db_retries} database retries."
        )
