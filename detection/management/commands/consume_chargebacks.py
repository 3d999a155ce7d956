"""Consume the chargebacks topic as a consumer-group member, labelling payments."""

from django.conf import settings
from django.core.management.base import BaseCommand

from detection.chargebacks import ChargebackStream
from detection.management.streaming import (
    consumer_arguments_add,
    consumer_clients,
    consumer_run,
)


class Command(BaseCommand):
    help = (
        "Consume chargebacks (JSON: transaction_id, is_fraud (default true), "
        "dispute_id, reason_code, note) and label the stored transactions they "
        "name, source 'chargeback'. A replayed report labels once; a report on a "
        "transaction that is not stored, or a bad record, goes to the DeadLetter "
        "table. SIGTERM/SIGINT finish the batch in hand and exit 0."
    )

    def add_arguments(self, parser):
        consumer_arguments_add(
            parser,
            topic=settings.KAFKA_CHARGEBACKS_TOPIC,
            topic_setting="KAFKA_CHARGEBACKS_TOPIC",
            group=settings.KAFKA_CHARGEBACKS_GROUP,
            group_setting="KAFKA_CHARGEBACKS_GROUP",
        )

    def handle(self, *args, **options):
        consumer, dead_letter_producer = consumer_clients(options)
        stream = ChargebackStream(
            consumer=consumer,
            topic=options["topic"],
            dead_letter_producer=dead_letter_producer,
            dead_letter_topic=settings.KAFKA_DEAD_LETTER_TOPIC,
        )
        report = consumer_run(stream, options)
        self.stdout.write(
            f"Consumed {report.records:,} chargeback records in {report.batches:,} "
            f"batches ({report.seconds:.1f} s): {report.created:,} labelled, "
            f"{report.duplicates:,} already labelled, {report.dead_letters:,} dead "
            f"letters, {report.db_retries} database retries."
        )
