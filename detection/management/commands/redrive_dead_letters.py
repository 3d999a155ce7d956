"""Score dead letters again once what made them fail is fixed."""

from django.core.management.base import BaseCommand, CommandError

from detection.management.arguments import database_id
from detection.models import DeadLetter
from detection.scoring import scoring_config_current
from detection.services import RedriveReport, dead_letters_redrive

BATCH_SIZE = 500


class Command(BaseCommand):
    help = (
        "Decode unresolved dead letters again; score and store those that are valid "
        "messages now (source 'redrive') and mark them resolved; letters from the "
        "chargeback topic label their transaction once it is stored. Still-invalid "
        "letters keep their row, with the new error in `resolution`."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--id",
            type=database_id,
            action="append",
            dest="ids",
            help="Only this dead letter (repeat for more); default: all unresolved.",
        )
        parser.add_argument("--topic", help="Only dead letters from this topic.")

    def handle(self, *args, **options):
        letters = DeadLetter.objects.filter(resolved_at__isnull=True).order_by("id")
        if options["ids"]:
            letters = letters.filter(id__in=options["ids"])
        if options["topic"]:
            letters = letters.filter(topic=options["topic"])
        ids = list(letters.values_list("id", flat=True))
        if options["ids"] and not ids:
            raise CommandError("No unresolved dead letter has those ids.")
        total = RedriveReport()
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            batch = list(DeadLetter.objects.filter(id__in=chunk))
            report = dead_letters_redrive(
                letters=batch, config=scoring_config_current()
            )
            total.add(report)
        self.stdout.write(f"Redrove {len(ids):,} dead letters: {total.summary()}.")
