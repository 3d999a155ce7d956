"""Write simulated transactions with ground-truth labels to a JSON Lines file."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from detection.management.arguments import number, outputs_check
from detection.simulator import simulate_transactions
from detection.simulator.engine import DEFAULT_START
from transactions.messages import parse_timestamp

# The simulator works out each day's weekday half a day in, so its days end a
# little before datetime's last.
LAST_END = datetime(9999, 12, 30, tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Write realistic simulated transactions (message schema, with is_fraud and "
        "fraud_scenario labels) to a JSON Lines file, in event order."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--users", type=number(int, low=1), default=1000, help="Cardholders."
        )
        parser.add_argument(
            "--days",
            type=number(float, low=0, low_open=True, high=36500, unit="days"),
            default=30,
            help="Days simulated (more than 0, at most 36500).",
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed.")
        parser.add_argument(
            "--start", help="First day (ISO 8601, default 2026-01-01T00:00:00Z)."
        )
        parser.add_argument(
            "--output", required=True, help="JSON Lines file to write ('-' = stdout)."
        )

    def handle(self, *args, **options):
        # Also for call_command(days=...), which skips the argument types.
        if options["users"] < 1 or options["days"] <= 0:
            raise CommandError("--users must be >= 1 and --days > 0.")
        try:
            start = parse_timestamp(options["start"]) if options["start"] else None
        except (ValueError, OverflowError) as exc:
            raise CommandError(f"--start is not an ISO 8601 time: {exc}") from exc
        try:
            end = (start or DEFAULT_START) + timedelta(days=options["days"])
        except OverflowError:
            end = LAST_END + timedelta(days=1)
        if end > LAST_END:
            raise CommandError(
                f"--start plus --days must end by {LAST_END:%Y-%m-%d}, "
                "the calendar's last days."
            )
        if options["output"] != "-":
            outputs_check({"--output": Path(options["output"])}, {})
        records = simulate_transactions(
            users=options["users"],
            days=options["days"],
            seed=options["seed"],
            start=start,
        )
        if options["output"] == "-":
            for record in records:
                self.stdout.write(json.dumps(record, separators=(",", ":")))
            return
        path = Path(options["output"])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"Cannot write to {path.parent}: {exc}") from exc
        count = fraud = 0
        with path.open("w", encoding="utf-8") as handle:
            for record in tqdm(records, desc="simulate", unit="txn", disable=None):
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                count += 1
                fraud += bool(record.get("is_fraud"))
        self.stdout.write(
            f"Wrote {count:,} transactions ({fraud:,} fraud, "
            f"{fraud / max(count, 1):.2%}) to {path}"
        )
