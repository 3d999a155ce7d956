"""Print scoring benchmarks: one-row model time, backtest speed, predict latency."""

import time
from datetime import UTC, datetime, timedelta

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.test import Client, override_settings

from detection.backtest import backtest_run
from detection.forest import forest_bench
from detection.profiles import OrmStateStore
from detection.registry import model_active_row
from detection.scoring import ScoringConfigProvider, scoring_config_defaults
from detection.services import model_retrain, transaction_batch_score_record
from detection.simulator import simulate_transactions
from transactions.messages import transaction_message_parse


class Command(BaseCommand):
    help = (
        "Measure, in one run: one-row model time (packed forest vs scikit-learn), "
        "backtest throughput on 150,000 simulated transactions, and POST "
        "/api/predict p50/p99 over 1,000 requests (in-process Django test client on "
        "the configured database; run it on a scratch DATABASE_URL, as `make bench`)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--requests", type=int, default=1000, help="Predict requests to time."
        )

    def handle(self, *args, **options):
        figures = forest_bench()
        self.stdout.write(
            "model one row: packed forest {:.3f} ms (p99 {:.3f} ms) vs scikit-learn "
            "score_samples {:.2f} ms per call; max |diff| {:.1e}".format(
                figures["packed_one_row_ms"],
                figures["packed_one_row_p99_ms"],
                figures["sklearn_one_row_ms"],
                figures["max_abs_diff"],
            )
        )
        self._backtest()
        self._predict(options["requests"])

    def _backtest(self):
        started = time.perf_counter()
        messages = sorted(
            (
                transaction_message_parse(record)
                for record in simulate_transactions(users=1000, days=50, seed=5)
            ),
            key=lambda m: m.timestamp,
        )
        parsed = time.perf_counter()
        messages = messages[:150_000]
        cut = messages[len(messages) * 2 // 3].timestamp
        result = backtest_run(
            messages, train_until=cut, config=scoring_config_defaults()
        )
        elapsed = time.perf_counter() - parsed
        self.stdout.write(
            f"backtest: {len(messages):,} transactions (train {result.trained_on:,}, "
            f"score {len(result.verdicts):,}) in {elapsed:.1f} s = "
            f"{len(messages) / elapsed:,.0f} txn/s (simulate+parse took "
            f"{parsed - started:.1f} s more)"
        )

    def _model_ensure(self):
        if model_active_row() is not None:
            return
        messages = [
            transaction_message_parse(record)
            for record in simulate_transactions(users=300, days=20, seed=9)
        ]
        provider = ScoringConfigProvider()
        store = OrmStateStore()
        for begin in range(0, len(messages), 1000):
            transaction_batch_score_record(
                messages=messages[begin : begin + 1000],
                store=store,
                config=provider.current(),
                source="bench",
            )
        version = model_retrain()
        self.stdout.write(f"(trained {version} on {len(messages):,} for predict)")

    def _predict(self, count: int):
        self._model_ensure()
        user, _ = get_user_model().objects.get_or_create(username="bench")
        # Recording through predict takes this permission, as for any API client.
        user.user_permissions.add(Permission.objects.get(codename="add_transaction"))
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        # One client as fast as it can go would meet the per-user request limit
        # (API_THROTTLE_USER_RATE); the figure is the scoring path's latency.
        with override_settings(API_THROTTLE_RATES={}):
            timings = self._predict_timed(client, count)
        p50, p99 = np.percentile(timings, [50, 99])
        self.stdout.write(
            f"POST /api/predict over {count:,} requests: p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms (in-process client, SQLite, "
            f"rules + model)"
        )

    def _predict_timed(self, client, count: int) -> list[float]:
        start = datetime.now(UTC) - timedelta(days=1)
        timings = []
        for index in range(count):
            payload = {
                "transaction_id": f"bench-{time.time_ns()}-{index}",
                "user_id": f"bench-user-{index % 50}",
                "amount": f"{10 + index % 90}.25",
                "timestamp": (start + timedelta(seconds=30 * index)).isoformat(),
                "location": ("London", "Paris", "Hyderabad")[index % 3],
            }
            begin = time.perf_counter()
            response = client.post(
                "/api/predict", payload, content_type="application/json"
            )
            timings.append((time.perf_counter() - begin) * 1000)
            if response.status_code != 201:
                raise CommandError(
                    f"predict answered {response.status_code}: "
                    f"{response.content[:500]!r}"
                )
        return timings
