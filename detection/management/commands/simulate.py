"""Write simulated transactions with ground-truth labels to a JSON Lines file."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from detection.simulator import simulate_transactions
from transactions.messages import parse_timestamp


class Command(BaseCommand):
    help = (
        "Write realistic simulated transactions (message schema, with is_fraud and "
        "fraud_scenario labels) to a JSON Lines file, in event order."
    )

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=1000, help="Cardholders.")
        parser.add_argument("--days", type=float, default=30, help="Days simulated.")
        parser.add_argument("--seed", type=int, default=1, help="Random seed.")
        parser.add_argument(
            "--start", help="First day (ISO 8601, default 2026-01-01T00:00:00Z)."
        )
        parser.add_argument(
            "--output", required=True, help="JSON Lines file to write ('-' = stdout)."
        )

    def handle(self, *args, **options):
        if options["users"] < 1 or options["days"] <= 0:
            raise CommandError("--users must be >= 1 and --days > 0.")
        try:
            start = parse_timestamp(options["start"]) if options["start"] else None
        except ValueError as exc:
            raise CommandError(f"--start is not an ISO 8601 time: {exc}") from exc
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
        path.parent.mkdir(parents=True, exist_ok=True)
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
