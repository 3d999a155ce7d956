"""The consumer as real processes: SIGKILL and restart, SIGTERM, a group of two.

Each test starts `manage.py consume_transactions` subprocesses on the test database
file and the embedded broker, and stops every process it started. Waits poll with
deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from detection.models import UserProfile
from tests.db import subprocess_database_url
from tests.detection.test_stream import (
    DEADLINE,
    group_new,
    produce,
    profiles_snapshot,
    simulated,
    stream_run,
    verdicts_snapshot,
    wait_until,
)
from transactions.models import Transaction

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.django_db(transaction=True),
]

CRASH_RECORDS = 20_000


class Consumers:
    """Start consumer subprocesses and stop all of them at the end of a test."""

    def __init__(self, *, bootstrap: str, redis_url: str, log_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        # Live events of these consumers stay apart from anyone else's on Redis.
        self.channel_prefix = f"test-{uuid.uuid4().hex[:12]}"
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, topic: str, group: str, *args: str) -> subprocess.Popen:
        """Start one consumer; its output goes to a log file (see `log`)."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "fraudsite.settings",
            "DEBUG": "1",
            "DATABASE_URL": subprocess_database_url(),
            "KAFKA_BROKER": self.bootstrap,
            "KAFKA_TRANSACTIONS_TOPIC": topic,
            "KAFKA_CONSUMER_GROUP": group,
            "REDIS_URL": self.redis_url,
            "CHANNEL_LAYER_PREFIX": self.channel_prefix,
            "PYTHONUNBUFFERED": "1",
        }
        log_path = self.log_dir / f"consumer-{len(self.started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "consume_transactions", *args],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append((process, log_path))
        return process

    def log(self, process: subprocess.Popen) -> str:
        """Return what a consumer has written so far."""
        path = next(path for p, path in self.started if p is process)
        return path.read_text(errors="replace")

    def wait(self, process: subprocess.Popen, timeout: float = DEADLINE) -> int:
        """Wait for a consumer to exit and return its status."""
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"consumer did not exit in {timeout:.0f} s:\n{self.log(process)}"
            )

    def stop_all(self) -> None:
        """Terminate, then kill, every consumer still running."""
        for process, _path in self.started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(15)


@pytest.fixture
def consumers(kafka_bootstrap, redis_url, tmp_path) -> Iterator[Consumers]:
    """Yield a consumer launcher whose processes are stopped after the test."""
    launcher = Consumers(
        bootstrap=kafka_bootstrap, redis_url=redis_url, log_dir=tmp_path
    )
    try:
        yield launcher
    finally:
        launcher.stop_all()


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    kafka_bootstrap, kafka_topic, consumers
):
    """Given 20,000 produced messages, when the consumer is SIGKILLed mid-stream and
    started again, then the stored set equals the produced set (0 lost, 0
    duplicated) and every user's state counts each transaction exactly once."""
    records = simulated(CRASH_RECORDS, seed=21, users=2000)
    produce(kafka_bootstrap, kafka_topic, records)
    group = group_new()

    first = consumers.start(kafka_topic, group, "--no-push")
    wait_until(
        lambda: Transaction.objects.count() >= 3000 or first.poll() is not None,
        timeout=DEADLINE,
        what="the first consumer to store 3,000 transactions",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(DEADLINE)
    at_kill = Transaction.objects.count()
    assert 0 < at_kill < CRASH_RECORDS, "the kill must land mid-stream"

    second = consumers.start(kafka_topic, group, "--no-push", "--stop-when-idle", "2")
    assert consumers.wait(second, timeout=120) == 0, consumers.log(second)

    produced = {m["transaction_id"] for m in records}
    stored = list(Transaction.objects.values_list("transaction_id", flat=True))
    assert len(stored) == len(set(stored)) == CRASH_RECORDS
    assert set(stored) == produced
    # State applied once per transaction: a replayed batch was skipped whole.
    assert sum(UserProfile.objects.values_list("txn_count", flat=True)) == CRASH_RECORDS


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    kafka_bootstrap, kafka_topic, consumers
):
    """Given a consumer working through a topic, when it gets SIGTERM, then it
    exits 0 having committed what it stored, so a successor in the same group
    replays nothing and scores the rest."""
    records = simulated(8000, seed=23, users=800)
    produce(kafka_bootstrap, kafka_topic, records)
    group = group_new()

    first = consumers.start(kafka_topic, group, "--no-push", "--batch-size", "100")
    wait_until(
        lambda: Transaction.objects.count() >= 500 or first.poll() is not None,
        timeout=DEADLINE,
        what="the consumer to store 500 transactions",
    )
    first.send_signal(signal.SIGTERM)
    assert consumers.wait(first) == 0, consumers.log(first)
    stored_first = Transaction.objects.count()
    assert "Terminated received" in consumers.log(first)

    report = stream_run(kafka_bootstrap, kafka_topic, group=group)

    assert report.duplicates == 0
    assert report.created == len(records) - stored_first
    assert Transaction.objects.count() == len(records)


def test_sigusr1_scores_everything_left_then_exits_zero(
    kafka_bootstrap, kafka_topic, consumers
):
    """SIGUSR1 (what `make run` sends at shutdown, the embedded broker keeping its
    log in memory) makes a consumer working through a topic score all of it, in
    batches smaller than the producer's, and then exit 0 by itself."""
    records = simulated(6000, seed=29, users=600)
    produce(kafka_bootstrap, kafka_topic, records)
    consumer = consumers.start(
        kafka_topic, group_new(), "--no-push", "--batch-size", "7"
    )
    wait_until(
        lambda: Transaction.objects.count() >= 100 or consumer.poll() is not None,
        timeout=DEADLINE,
        what="the consumer to store 100 transactions",
    )
    consumer.send_signal(signal.SIGUSR1)
    assert consumers.wait(consumer, timeout=3 * DEADLINE) == 0, consumers.log(consumer)
    assert "SIGUSR1 received" in consumers.log(consumer)
    assert Transaction.objects.count() == len(records)


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Return True once process `pid` has a handler for `sig` (its SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (sig - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_sigusr1_while_the_consumer_is_still_starting_is_a_drain(
    kafka_bootstrap, kafka_topic, consumers
):
    """A SIGUSR1 that arrives while Django and the model are still loading (make
    run stopped right after it started) is remembered, not fatal: the consumer
    scores what the topic holds and exits 0."""
    records = simulated(200, seed=41, users=40)
    produce(kafka_bootstrap, kafka_topic, records)
    consumer = consumers.start(kafka_topic, group_new(), "--no-push")
    wait_until(
        lambda: _catches(consumer.pid, signal.SIGUSR1) or consumer.poll() is not None,
        timeout=DEADLINE,
        what="manage.py to take SIGUSR1",
    )
    consumer.send_signal(signal.SIGUSR1)
    assert consumers.wait(consumer, timeout=3 * DEADLINE) == 0, consumers.log(consumer)
    assert "SIGUSR1 received while starting" in consumers.log(consumer)
    assert Transaction.objects.count() == len(records)


def assigned_partitions(log: str) -> int | None:
    """Return how many partitions the consumer's latest assignment holds."""
    lines = [line for line in log.splitlines() if "partitions assigned:" in line]
    if not lines:
        return None
    return lines[-1].split("partitions assigned:", 1)[1].count("[")


def test_two_consumers_share_the_topic_and_agree_with_one(
    kafka_bootstrap, kafka_topic, consumers
):
    """Given two consumer processes in one group, when a stream is produced, then
    both take partitions, every record is scored once, and every user's state and
    verdict equal those of a single-process run of the same records."""
    records = simulated(6000, seed=29, users=600)
    group = group_new()
    # No idle exit: they run until every record is stored, then drain (SIGUSR1).
    pair = [consumers.start(kafka_topic, group) for _ in "ab"]
    wait_until(
        lambda: all((assigned_partitions(consumers.log(p)) or 6) < 6 for p in pair),
        timeout=DEADLINE,
        what="both consumers to hold a share of the partitions",
    )
    produce(kafka_bootstrap, kafka_topic, records)
    wait_until(
        lambda: (
            Transaction.objects.count() >= len(records)
            or any(p.poll() is not None for p in pair)
        ),
        timeout=120,
        what="every record to be stored",
    )
    for process in pair:
        process.send_signal(signal.SIGUSR1)
    for process in pair:
        assert consumers.wait(process, timeout=120) == 0, consumers.log(process)

    logs = [consumers.log(p) for p in pair]
    assert all(" 0 scored" not in log for log in logs), logs
    stored = list(Transaction.objects.values_list("transaction_id", flat=True))
    assert sorted(stored) == sorted(m["transaction_id"] for m in records)
    pair_profiles, pair_verdicts = profiles_snapshot(), verdicts_snapshot()

    Transaction.objects.all().delete()
    UserProfile.objects.all().delete()
    single = stream_run(kafka_bootstrap, kafka_topic)

    assert single.created == len(records)
    assert profiles_snapshot() == pair_profiles
    assert verdicts_snapshot() == pair_verdicts
