"""Train a new Isolation Forest on stored history and activate it."""

from django.core.management.base import BaseCommand, CommandError

from detection.registry import default_training_since
from detection.services import model_retrain


class Command(BaseCommand):
    help = (
        "Train an Isolation Forest on stored transactions (replayed in event order "
        "to rebuild each user's behaviour), store it as a new ModelVersion and make "
        "it active; running scorers pick it up within seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=float,
            default=None,
            help="Train on the last N days of event time (default: all history).",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=200_000,
            help="Use at most this many of the most recent transactions.",
        )
        parser.add_argument(
            "--warmup",
            type=int,
            default=None,
            help="Replay up to this many older transactions first, to build the "
            "cards' history without training on them (default: --limit).",
        )

    def handle(self, *args, **options):
        since = default_training_since(options["days"]) if options["days"] else None
        try:
            version = model_retrain(
                since=since, limit=options["limit"], warmup=options["warmup"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Activated model {version}"))
