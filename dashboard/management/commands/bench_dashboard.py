"""Measure the server time of the dashboard's overview and first table page."""

from __future__ import annotations

import statistics
import time

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.test import Client
from django.test.utils import override_settings

from fraudsite.permissions import READ_PERMISSION
from transactions.selectors import verdict_totals

# (label, path, held to the budget): what an analyst's browser asks for when
# opening the dashboard; the filtered pages are reported for information.
REQUESTS = (
    ("overview page", "/", True),
    ("overview data (reconnect catch-up)", "/overview/data", True),
    ("transactions page", "/transactions/", True),
    ("first table page (API, n=50)", "/api/transactions?n=50", True),
    ("first page, status=fraud", "/api/transactions?n=50&status=fraud", False),
    (
        "first page, rule=geo_velocity",
        "/api/transactions?n=50&rule=geo_velocity",
        False,
    ),
    ("first page, sorted by amount", "/api/transactions?n=50&ordering=-amount", False),
)
BUDGET_MS = 300.0
BENCH_USERNAME = "bench-dashboard-temporary"


class Command(BaseCommand):
    help = (
        "Print the server time (Django test client, full middleware stack) of the "
        "dashboard's overview and first table page against the current database. "
        "For the 1,000,000-row figure run `manage.py seed_transactions --count "
        "1000000` first."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--repeat", type=int, default=20, help="Timed requests per page."
        )

    def handle(self, *args, **options):
        if options["repeat"] < 1:
            raise CommandError("--repeat must be at least 1.")
        total = verdict_totals()["total"]
        self.stdout.write(f"Stored transactions (from tallies): {total:,}")
        user_model = get_user_model()
        user = user_model.objects.create_user(username=BENCH_USERNAME, is_staff=True)
        # The pages take the read permission, as for any analyst (a Viewer's).
        app_label, codename = READ_PERMISSION.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
        over_budget = []
        try:
            # The test client's host is "testserver"; allow it for this run only.
            with override_settings(ALLOWED_HOSTS=["testserver"]):
                client = Client()
                client.force_login(user)
                for label, path, budgeted in REQUESTS:
                    median = self._measure(client, label, path, options["repeat"])
                    if budgeted and median > BUDGET_MS:
                        over_budget.append(label)
                self._export(client)
                client.logout()
        finally:
            user.delete()
        if over_budget:
            raise CommandError(
                f"Over the {BUDGET_MS:.0f} ms budget: {', '.join(over_budget)}"
            )

    def _export(self, client: Client) -> None:
        """Time a CSV export of the newest minutes holding at most the row limit."""
        from django.conf import settings

        from transactions.models import VerdictTally

        rows, since = 0, None
        for minute, total in VerdictTally.objects.order_by("-minute").values_list(
            "minute", "total"
        ):
            if rows + total > settings.API_EXPORT_MAX_ROWS:
                break
            rows, since = rows + total, minute
        if since is None:
            return
        timings, size = [], 0
        for _ in range(3):
            started = time.perf_counter()
            response = client.get(
                "/api/transactions/export", {"scored_since": since.isoformat()}
            )
            size = sum(len(chunk) for chunk in response.streaming_content)
            timings.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise CommandError(f"export answered {response.status_code}")
        self.stdout.write(
            f"CSV export of {rows:,} rows ({size / 1e6:.1f} MB): median "
            f"{statistics.median(timings):.2f} s of 3 (not budgeted)"
        )

    def _measure(self, client: Client, label: str, path: str, repeat: int) -> float:
        """Time `repeat` requests after one warm-up; print and return the median."""
        response = client.get(path)
        if response.status_code != 200:
            raise CommandError(f"{path} answered {response.status_code}")
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise CommandError(f"{path} answered {response.status_code}")
        timings.sort()
        median = statistics.median(timings)
        worst = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
        self.stdout.write(
            f"{label:<38} median {median:7.1f} ms   p95 {worst:7.1f} ms   "
            f"min {timings[0]:7.1f} ms   ({path})"
        )
        return median
