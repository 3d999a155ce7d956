"""Fixtures of the dashboard tests: scoring helpers, a live ASGI server, a browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detection.events import verdicts_event_build, verdicts_publish
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from tests.db import subprocess_database_url
from transactions.messages import transaction_message_parse
from transactions.models import Transaction

ROOT = Path(__file__).resolve().parents[2]
# The dashboard tests use their own Redis database number: a stream consumer or
# another suite on the same Redis then cannot push verdicts into these pages.
DASHBOARD_REDIS_DB = 11
SERVER_START_SECONDS = 30.0


def redis_url_with_db(url: str, db: int) -> str:
    """Return the Redis URL pointing at database `db`."""
    base, _, tail = url.rpartition("/")
    if base.startswith("redis") and tail.isdigit():
        return f"{base}/{db}"
    return f"{url.rstrip('/')}/{db}"


@pytest.fixture(scope="session")
def dashboard_redis_url(redis_url: str) -> str:
    """Return the Redis URL (own database) that the dashboard tests push through."""
    return redis_url_with_db(redis_url, DASHBOARD_REDIS_DB)


@pytest.fixture
def channel_layer_redis(settings, dashboard_redis_url):
    """Point this process's channel layer at the tests' Redis; return the layer."""
    from channels.layers import get_channel_layer

    # The same prefix as the live server this test run started (tests/settings.py).
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [dashboard_redis_url],
                "capacity": 1000,
                "expiry": 10,
                "prefix": prefix,
            },
        }
    }
    return get_channel_layer()


@pytest.fixture
def scoring_rules(db):
    """Ensure the seeded rules and thresholds exist (transactional tests flush them)."""
    from detection.services import rules_seed_defaults

    rules_seed_defaults()


@pytest.fixture
def score(scoring_rules):
    """Return a function that scores and stores messages like the stream does."""

    def score_messages(*payloads: dict):
        messages = [transaction_message_parse(dict(p)) for p in payloads]
        result = transaction_batch_score_record(
            messages=messages,
            store=OrmStateStore(use_cache=False),
            config=scoring_config_from_db(model=None),
            source="test",
        )
        # Stored rows, oldest first: the tests compare against what the DB holds.
        ids = [row["transaction_id"] for row in result.created]
        return list(Transaction.objects.filter(transaction_id__in=ids).order_by("pk"))

    return score_messages


def transaction_row_of(txn: Transaction) -> dict:
    """Return a stored Transaction as the column values the stream publishes."""
    return {f.attname: getattr(txn, f.attname) for f in txn._meta.concrete_fields}


def publish_verdicts(transactions, *, channel_layer=None) -> dict:
    """Send the stream's `verdicts.batch` event for these stored transactions."""
    newest_first = sorted(transactions, key=lambda t: t.pk, reverse=True)
    event = verdicts_event_build(
        rows=[transaction_row_of(t) for t in newest_first],
        counts=Counter(t.status for t in transactions),
        throughput=float(len(transactions)),
        sent_at=datetime.now(UTC),
    )
    # A worker thread: Playwright's sync API holds an event loop on the test
    # thread, and async_to_sync refuses to run beside it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(verdicts_publish, event, channel_layer=channel_layer).result(10)
    return event


def message(**overrides) -> dict:
    """Return a valid transaction message with a fresh id."""
    payload = {
        "transaction_id": f"t-{uuid.uuid4().hex[:12]}",
        "user_id": "u-100",
        "amount": "42.50",
        "location": "Hyderabad",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    payload.update(overrides)
    return payload


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A daphne subprocess serving the project on the test database."""

    def __init__(self, *, database: str, redis_url: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = database
        self.redis_url = redis_url
        self.log_path = log_dir / f"daphne-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start daphne and wait (with a deadline) until it serves the login page."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": subprocess_database_url(),
            "DEBUG": "1",
            "REDIS_URL": self.redis_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "fraudsite.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"daphne exited with {self.process.returncode}; "
                    f"see {self.log_path}:\n{self.log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/accounts/login/", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)  # poll interval, bounded by the deadline above
        self.stop()
        raise RuntimeError(f"daphne did not answer within {SERVER_START_SECONDS} s")

    def stop(self) -> None:
        """Stop daphne (terminate, then kill after a deadline)."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def live_server_asgi(
    django_db_setup, django_db_blocker, dashboard_redis_url, tmp_path_factory
):
    """Yield a running daphne that shares the test database file; stop it after."""
    from django.db import connection

    with django_db_blocker.unblock():
        database = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite" and not str(database).startswith("/"):
        pytest.skip("the live server needs the file-backed SQLite test database")
    server = LiveServer(
        database=str(database),
        redis_url=dashboard_redis_url,
        log_dir=tmp_path_factory.mktemp("daphne"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Yield Debian's Chromium driven by Playwright; close it after the module."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        # CI installs Chromium first (.ci/run), so there a missing browser is a
        # failure; on a laptop without it the browser tests are skipped, loudly.
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread, which makes Django
    # refuse ORM calls from the test body; the test thread never awaits anything
    # itself, so the check is safe to lift (as Playwright's docs advise).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            try:
                yield instance
            finally:
                instance.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture
def page(browser, live_server_asgi):
    """Yield a fresh 1440x900 page (own cookies) aimed at the live server."""
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, base_url=live_server_asgi.url
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.js_errors = errors
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def logged_in_page(page, staff_user):
    """Return a page on which the staff user has logged in through the form."""
    page.goto("/")
    page.fill("#id_username", staff_user.username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    return page
