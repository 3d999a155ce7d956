"""Bulk-load simulated verdicts, to try the dashboard and API at scale."""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from detection.management.arguments import number
from detection.rules import RULE_TYPES
from transactions.bulk import key_chunks, rows_insert
from transactions.messages import amount_places
from transactions.models import Transaction, VerdictTally, reason_codes_text
from transactions.services import reason_tallies_add

CITIES = (
    ("Hyderabad", 17.385, 78.4867, "IN"),
    ("Mumbai", 19.076, 72.8777, "IN"),
    ("Delhi", 28.7041, 77.1025, "IN"),
    ("London", 51.5072, -0.1276, "GB"),
    ("Paris", 48.8566, 2.3522, "FR"),
    ("Berlin", 52.52, 13.405, "DE"),
    ("New York", 40.7128, -74.006, "US"),
    ("Chicago", 41.8781, -87.6298, "US"),
    ("San Francisco", 37.7749, -122.4194, "US"),
    ("Tokyo", 35.6762, 139.6503, "JP"),
    ("Singapore", 1.3521, 103.8198, "SG"),
    ("Sydney", -33.8688, 151.2093, "AU"),
    ("Sao Paulo", -23.5505, -46.6333, "BR"),
    ("Lagos", 6.5244, 3.3792, "NG"),
    ("Dubai", 25.2048, 55.2708, "AE"),
)
CATEGORIES = ("grocery", "restaurant", "fuel", "electronics", "travel", "clothing")
CHANNELS = ("pos", "ecom", "atm")
# Shares of the simulated verdicts, close to what the stream produces.
STATUS_WEIGHTS = (("legit", 0.94), ("suspicious", 0.045), ("fraud", 0.015))
SUSPICIOUS_RULES = ("amount_spike", "large_amount", "high_velocity", "model_anomaly")
FRAUD_RULE_PAIRS = (
    ("geo_velocity", "amount_spike"),
    ("huge_amount", "model_anomaly"),
    ("high_velocity", "amount_spike"),
    ("geo_velocity", "model_anomaly"),
)


def _reason(code: str, amount: float, rng: random.Random) -> dict:
    """Return a reason shaped like the scorer's, with plausible values."""
    rule = RULE_TYPES[code]
    if code == "amount_spike":
        typical = round(amount / rng.uniform(5, 20), 2)
        detail = f"{amount:,.2f} is {amount / typical:.1f}x the user's typical"
        values = {"amount": amount, "typical_amount": typical, "multiplier": 5.0}
    elif code in ("large_amount", "huge_amount"):
        threshold = 2000.0 if code == "large_amount" else 10000.0
        detail = f"{amount:,.0f} >= {threshold:,.0f}"
        values = {"amount": amount, "threshold": threshold}
    elif code == "geo_velocity":
        distance = rng.uniform(1000, 9000)
        hours = rng.uniform(0.5, 3)
        speed = distance / hours
        detail = f"{distance:,.0f} km in {hours:.1f} h = {speed:,.0f} km/h > 900 km/h"
        values = {
            "distance_km": round(distance, 1),
            "hours": round(hours, 3),
            "speed_kmh": round(speed, 1),
            "max_speed_kmh": 900.0,
            "previous_location": rng.choice(CITIES)[0],
        }
    elif code == "high_velocity":
        count = rng.randint(5, 15)
        detail = f"{count} transactions in 10 min (fires at 5)"
        values = {"count": count, "window_minutes": 10.0, "max_count": 5}
    else:
        score = round(rng.uniform(0.62, 0.8), 4)
        detail = f"anomaly score {score:.3f} >= 0.620"
        values = {"model_score": score, "threshold": 0.62}
    return {
        "code": code,
        "label": rule.name,
        "weight": rule.weight,
        "detail": detail,
        "values": values,
    }


def _verdict(rng: random.Random, amount: float) -> tuple[str, float, list[dict]]:
    """Return a simulated (status, risk_score, reasons)."""
    roll = rng.random()
    if roll < STATUS_WEIGHTS[0][1]:
        return "legit", round(rng.uniform(0, 0.35), 4), []
    if roll < STATUS_WEIGHTS[0][1] + STATUS_WEIGHTS[1][1]:
        code = rng.choice(SUSPICIOUS_RULES)
        return (
            "suspicious",
            round(rng.uniform(0.5, 0.79), 4),
            [_reason(code, amount, rng)],
        )
    codes = rng.choice(FRAUD_RULE_PAIRS)
    reasons = [_reason(code, amount, rng) for code in codes]
    return "fraud", round(rng.uniform(0.8, 1.0), 4), reasons


class Command(BaseCommand):
    help = (
        "Bulk-load N simulated scored transactions (and their per-minute tallies) "
        "spread over the last --days, for scale tests of the dashboard and API. "
        "Rows bypass the scorer: use `simulate` + the stream for real verdicts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--count",
            type=number(int, low=1),
            default=100_000,
            help="Transactions to create.",
        )
        parser.add_argument(
            "--days",
            type=number(float, low=0, low_open=True, high=36500, unit="days"),
            default=7.0,
            help="Spread scoring times over days (more than 0, at most 36500).",
        )
        parser.add_argument(
            "--users",
            type=number(int, low=1),
            default=20_000,
            help="Distinct simulated users.",
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed.")
        parser.add_argument(
            "--chunk",
            type=number(int, low=1),
            default=5000,
            help="Rows per database transaction.",
        )

    def handle(self, *args, **options):
        count, days = options["count"], options["days"]
        # Also for call_command(count=...), which skips the argument types.
        if count < 1 or days <= 0 or options["users"] < 1 or options["chunk"] < 1:
            raise CommandError("--count, --users, --chunk >= 1 and --days > 0.")
        rng = random.Random(options["seed"])
        # A run prefix keeps ids unique when the command runs twice.
        prefix = f"seed-{secrets.token_hex(3)}"
        end = datetime.now(UTC)
        span = timedelta(days=days).total_seconds()
        started = time.monotonic()
        tallies: dict[datetime, Counter] = {}
        with tqdm(total=count, unit="txn", desc="seed", disable=None) as bar:
            for first in range(0, count, options["chunk"]):
                size = min(options["chunk"], count - first)
                # Oldest first, so ids grow with scoring time as in production.
                offsets = sorted(
                    (rng.random() * span for _ in range(size)), reverse=True
                )
                rows = [
                    self._row(rng, prefix, first + i, end, offset, options["users"])
                    for i, offset in enumerate(offsets)
                ]
                with transaction.atomic():
                    rows_insert(model=Transaction, rows=rows)
                    reason_tallies_add(rows=rows)
                for row in rows:
                    minute = row["scored_at"].replace(second=0, microsecond=0)
                    tallies.setdefault(minute, Counter())[row["status"]] += 1
                bar.update(size)
        self._tallies_add(tallies)
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"Created {count:,} transactions ({prefix}-*) in {elapsed:.1f} s "
            f"({count / elapsed:,.0f} rows/s)."
        )

    def _row(self, rng, prefix, index, end, offset, users) -> dict:
        city, latitude, longitude, country = rng.choice(CITIES)
        # In the base currency's minor unit (whole yen for JPY), at least one.
        places = amount_places(settings.BASE_CURRENCY)
        amount = round(min(rng.lognormvariate(3.8, 1.1), 50_000.0), places)
        amount += 10.0**-places
        status, risk, reasons = _verdict(rng, amount)
        scored_at = end - timedelta(seconds=offset)
        return {
            "transaction_id": f"{prefix}-{index:08d}",
            "user_id": f"user-{rng.randrange(users):06d}",
            "amount": Decimal(f"{amount:.{places}f}"),
            "amount_base": round(amount, places),
            # Seeded amounts are in the base currency: amount_base is the amount.
            "currency": settings.BASE_CURRENCY,
            "timestamp": scored_at - timedelta(milliseconds=rng.randint(5, 900)),
            "merchant_id": f"m-{rng.randrange(5000):05d}",
            "merchant_category": rng.choice(CATEGORIES),
            "channel": rng.choice(CHANNELS),
            "location": city,
            "latitude": latitude,
            "longitude": longitude,
            "country": country,
            "risk_score": risk,
            "status": status,
            "reasons": reasons,
            "reason_codes": reason_codes_text(r["code"] for r in reasons),
            "notes": [],
            "model_score": round(rng.uniform(0.3, 0.8), 4),
            "model_version": "seed",
            "scored_at": scored_at,
            "received_at": scored_at,
            "ingest_source": "seed",
        }

    def _tallies_add(self, tallies: dict[datetime, Counter]) -> None:
        """Add the per-minute counts to the tallies in one transaction."""
        minutes = sorted(tallies)
        with transaction.atomic():
            existing = {}
            for chunk in key_chunks(minutes):
                for tally in VerdictTally.objects.filter(minute__in=chunk):
                    existing[tally.minute] = tally
            rows = []
            for minute in minutes:
                counts = tallies[minute]
                tally = existing.get(minute) or VerdictTally(minute=minute)
                tally.legit += counts["legit"]
                tally.suspicious += counts["suspicious"]
                tally.fraud += counts["fraud"]
                tally.total += sum(counts.values())
                rows.append(tally)
            VerdictTally.objects.bulk_create(
                rows,
                batch_size=500,
                update_conflicts=True,
                unique_fields=["minute"],
                update_fields=["total", "legit", "suspicious", "fraud"],
            )
