"""Train a new Isolation Forest on stored history and activate it."""

from django.core.management.base import BaseCommand, CommandError

from detection.management.arguments import number
from detection.models import ModelVersion
from detection.registry import default_training_since
from detection.services import model_retrain


class Command(BaseCommand):
    help = (
        "Train an Isolation Forest on stored transactions (replayed in event order "
        "to rebuild each user's behaviour), store it as a new ModelVersion and make "
        "it active, unless it would alone flag too much of the newest traffic or "
        "analysts' labels show it ranks fraud clearly worse than the active model "
        "(then it is stored inactive, with the reason; --force activates it). "
        "Running scorers pick up an activated model within seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=number(float, low=0, low_open=True, high=36500, unit="days"),
            default=None,
            help="Train on the last N days of event time (default: all history).",
        )
        parser.add_argument(
            "--limit",
            type=number(int, low=0, low_open=True),
            default=200_000,
            help="Use at most this many of the most recent transactions.",
        )
        parser.add_argument(
            "--warmup",
            type=number(int, low=0),
            default=None,
            help="Replay up to this many older transactions first, to build the "
            "cards' history without training on them (default: --limit).",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Activate the new model even if it fails the activation checks.",
        )

    def handle(self, *args, **options):
        since = default_training_since(options["days"]) if options["days"] else None
        try:
            version = model_retrain(
                since=since,
                limit=options["limit"],
                warmup=options["warmup"],
                force=options["force"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        row = ModelVersion.objects.get(version=version)
        reason = row.evaluation.get("reason", "")
        if row.is_active:
            message = f"Activated model {version}: {reason}"
            self.stdout.write(self.style.SUCCESS(message))
        else:
            active = row.evaluation.get("active_version")
            kept = (
                f"kept {active} active"
                if active
                else "scoring stays on the rules alone"
            )
            self.stdout.write(
                self.style.WARNING(
                    f"Stored model {version} inactive ({kept}): {reason}. "
                    "Activate it anyway with --force or the admin's Activate action."
                )
            )
        if row.evaluation.get("classifier"):
            self.stdout.write(f"Classifier: {row.evaluation['classifier']}")
