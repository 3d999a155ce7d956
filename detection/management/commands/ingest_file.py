"""Score and record a JSON Lines or CSV file through the live path (a backfill)."""

from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from detection.backtest import backtest_read
from detection.chargebacks import chargeback_reference, chargebacks_apply
from detection.management.arguments import input_file_check
from detection.profiles import OrmStateStore
from detection.scoring import ScoringConfigProvider
from detection.services import (
    transaction_batch_score_record,
    transaction_id_conflicts,
)
from transactions.messages import ChargebackMessage

BATCH_SIZE = 1000


class Command(BaseCommand):
    help = (
        "Score the transactions of a JSON Lines or CSV file in event order and store "
        "verdicts and user state, exactly as the stream does (idempotent: ids already "
        "stored are skipped; an id stored for another payment is reported and not "
        "scored). Use it to load history before training a model."
    )

    def add_arguments(self, parser):
        parser.add_argument("input", help="JSON Lines (.jsonl) or CSV (.csv) file.")
        parser.add_argument(
            "--chargebacks",
            action="store_true",
            help=(
                "Also label the file's is_fraud=true transactions as chargebacks "
                "(dispute id 'file', stored once: a second run adds none), as if "
                "their disputes had come in: history whose frauds are known, for "
                "the classifier and the rule performance panel to learn from."
            ),
        )

    def handle(self, *args, **options):
        path = Path(options["input"])
        input_file_check(path)
        provider = ScoringConfigProvider()
        messages, rejected = backtest_read(
            path, currencies=provider.current().currencies
        )
        for item in rejected[:20]:
            self.stderr.write(f"line {item.line}: {item.error}")
        store = OrmStateStore()
        created = duplicates = labelled = 0
        conflicts: list[str] = []
        with tqdm(total=len(messages), desc="ingest", unit="txn", disable=None) as bar:
            for start in range(0, len(messages), BATCH_SIZE):
                batch = messages[start : start + BATCH_SIZE]
                result = transaction_batch_score_record(
                    messages=batch,
                    store=store,
                    config=provider.current(),
                    source="file",
                )
                created += len(result.created)
                stored = set(result.duplicates)
                again = [m for m in batch if m.transaction_id in stored]
                found = transaction_id_conflicts(again)
                conflicts += [error for error in found if error]
                duplicates += len(result.duplicates)
                if options["chargebacks"]:
                    # Not a line whose id is stored for another payment: its
                    # is_fraud says nothing of the stored one.
                    reused = {
                        m.transaction_id
                        for m, error in zip(again, found, strict=True)
                        if error
                    }
                    labelled += self.chargebacks_store(
                        [m for m in batch if m.transaction_id not in reused],
                        source=path.name,
                    )
                bar.update(len(batch))
        for error in conflicts[:20]:
            self.stderr.write(error)
        self.stdout.write(
            f"Stored {created:,} transactions; "
            f"{duplicates - len(conflicts):,} already stored; "
            f"{len(conflicts):,} reusing the id of another stored payment (not "
            f"scored); {len(rejected):,} lines rejected."
            + (
                f" Labelled {labelled:,} frauds as chargebacks."
                if options["chargebacks"]
                else ""
            )
        )

    def chargebacks_store(self, batch, *, source: str) -> int:
        """Label the batch's frauds as chargebacks; return how many were new."""
        reports = []
        for message in batch:
            if message.is_fraud:
                report = ChargebackMessage(
                    transaction_id=message.transaction_id,
                    dispute_id="file",
                    note=f"is_fraud in {source}",
                )
                reference = chargeback_reference(
                    report, topic="", partition=None, offset=None, value=b""
                )
                reports.append((report, reference))
        if not reports:
            return 0
        with transaction.atomic():
            return chargebacks_apply(reports=reports).labelled
