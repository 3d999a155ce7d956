"""Benchmark the Kafka stream: throughput, latency, raw ceiling, one-at-a-time.

Everything runs in one command on scratch databases and fresh topics, so a run is
reproducible (`manage.py bench_stream`) and leaves the real data alone. The scratch
databases are SQLite files, or, when DATABASE_URL points at PostgreSQL, databases on
that server (the targets are for SQLite). The consumer under test is the real
`consume_transactions` command in its own process, with DEBUG off as in production.
Figures are printed; nothing is asserted.
"""

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test.utils import override_settings

from detection.benchmarks.databases import ScratchDatabases
from detection.benchmarks.raw import raw_consume_rate
from detection.benchmarks.stream import (
    loop_profile,
    one_at_a_time_consume,
    scored_rate,
)
from detection.kafka import (
    CONSUMER_FETCH,
    kafka_topic_ensure,
    producer_create,
    transactions_produce,
)
from detection.models import ModelVersion
from detection.profiles import OrmStateStore
from detection.scoring import ScoringConfigProvider
from detection.services import model_retrain, transaction_batch_score_record
from detection.simulator import simulate_transactions
from fraudsite import embedded
from transactions.bulk import key_chunks
from transactions.messages import transaction_message_parse
from transactions.models import Label, Transaction

TARGET_RATE = 5000.0
TARGET_SHARE_OF_RAW = 0.35
TARGET_SPEEDUP = 30.0
TARGET_P99_MS = 250.0
PROFILE_LINES = 30
DEADLINE = 600.0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Benchmark the stream on a scratch database: preload history and train the "
        "model, produce --records messages, then report one consumer process's "
        "sustained throughput (first to last scored_at), latency p50/p99 from "
        "received_at to scored_at under a steady --latency-rate, the raw "
        "kafka-python consume+decode rate, and a one-record-at-a-time consumer."
    )

    def add_arguments(self, parser):
        parser.add_argument("--records", type=int, default=50_000, help="Records.")
        parser.add_argument("--users", type=int, default=3000, help="Cardholders.")
        parser.add_argument(
            "--history-days", type=float, default=5, help="Days preloaded as history."
        )
        parser.add_argument(
            "--latency-rate", type=float, default=1000, help="Offered load, rec/s."
        )
        parser.add_argument(
            "--latency-seconds", type=float, default=15, help="Latency phase length."
        )
        parser.add_argument(
            "--one-at-a-time-records",
            type=int,
            default=2000,
            help="Records for the two one-at-a-time consumers (half each).",
        )
        parser.add_argument("--seed", type=int, default=42, help="Random seed.")
        parser.add_argument(
            "--repeats",
            type=int,
            default=3,
            help="Runs of one and of two processes, each from one state (median).",
        )
        parser.add_argument(
            "--profile",
            action="store_true",
            help="Sample the throughput consumer with py-spy; print its hot spots.",
        )
        parser.add_argument(
            "--keep", action="store_true", help="Keep the scratch databases."
        )

    def handle(self, *args, **options):
        # SIGTERM (a `kill`, a CI timeout) stops the benchmark as Ctrl-C does: the
        # `finally` below stops the consumers, the broker and Redis it started and
        # drops the scratch databases, instead of leaving them running.
        signal.signal(signal.SIGTERM, _interrupt)
        self.options = options
        self.processes: list[subprocess.Popen] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
        self.scratch = ScratchDatabases(self.workdir)
        bootstrap, broker = embedded.kafka_broker_resolve(
            settings.KAFKA_BROKER, log_dir=self.workdir
        )
        redis_url, redis_server = embedded.redis_resolve(
            settings.REDIS_URL, log_dir=self.workdir
        )
        self.bootstrap, self.redis_url = bootstrap, redis_url
        try:
            # The consumers under test run with DEBUG off; so does this process, or
            # Django would log every query of the preload and the baseline.
            with override_settings(DEBUG=False, KAFKA_BROKER=bootstrap):
                self.database = self.scratch.create("main")
                self.run_phases()
        finally:
            self.processes_stop()
            connection.close()
            if redis_server is not None:
                redis_server.stop()
            if broker is not None:
                broker.stop()
            if options["keep"]:
                self.stdout.write(f"Kept databases: {', '.join(self.scratch.created)}")
            else:
                self.scratch.drop_all()
        self.stdout.write(f"Logs in {self.workdir}")

    # --- set-up -------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Print a progress line."""
        self.stdout.write(text)
        self.stdout.flush()

    def run_phases(self) -> None:
        """Run every phase and print the figures."""
        options = self.options
        history, main, latency, single = self.records_simulate()
        self.say(f"Preloading {len(history):,} transactions of history ...")
        began = time.monotonic()
        self.history_preload(history)
        version = model_retrain()
        self.say(f"  done in {time.monotonic() - began:.1f} s; model {version}")
        classifier = ModelVersion.objects.get(version=version).evaluation["classifier"]
        self.say(f"  its classifier (scored in every batch below): {classifier}")
        # Repeated and scale-out runs start from this same state, on copies.
        base = self.scratch.copy(self.database, "base")

        topic = self.topic_new("main")
        sent = self.produce(topic, main)
        self.say(f"Produced {sent.sent:,} records in {sent.seconds:.1f} s")

        raw_rate = self.raw_consume_rate(topic, len(main))
        self.say(f"Raw kafka-python consume + orjson decode: {raw_rate:,.0f} rec/s")
        stock_rate, stock_checksum = self.raw_consume_rate_stock(topic, len(main))
        self.say(
            f"Raw stock kafka-python ({stock_checksum}) + json: {stock_rate:,.0f} rec/s"
        )

        profile = self.workdir / "consumer.prof" if options["profile"] else None
        rates = [self.consumers_rate(topic, main, self.database, profile=profile)]
        self.say(f"Stream consumer: {rates[0]:,.0f} rec/s sustained")
        if profile:
            self.profile_print(profile)
            self.say("  (sampled by py-spy: a rough throughput figure; rerun without)")
        for run in range(1, 1 if profile else options["repeats"]):
            database = self.scratch.copy(base, f"repeat{run}")
            rates.append(self.consumers_rate(topic, main, database))
            self.say(f"Stream consumer, run {run + 1}: {rates[-1]:,.0f} rec/s")
        rate = statistics.median(rates)

        pair_rates = []
        for run in range(1 if profile else options["repeats"]):
            database = self.scratch.copy(base, f"pair{run}")
            pair_rates.append(self.consumers_rate(topic, main, database, processes=2))
            self.say(f"Two consumer processes, one group: {pair_rates[-1]:,.0f} rec/s")
        pair_rate = statistics.median(pair_rates)

        p50, p99, worst, offered = self.latency(latency)
        self.say(
            f"Latency at {offered:,.0f} rec/s offered: p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms, max {worst:.0f} ms"
        )

        half = len(single) // 2
        single_rate = self.one_at_a_time_rate(single[:half], sklearn=True)
        self.say(f"One-at-a-time consumer (scikit-learn): {single_rate:,.0f} rec/s")
        packed_rate = self.one_at_a_time_rate(single[half:], sklearn=False)
        self.say(f"One-at-a-time consumer (packed forest): {packed_rate:,.0f} rec/s")

        share, speedup = rate / raw_rate, rate / single_rate
        latency_name = f"p99 latency at {options['latency_rate']:,.0f} rec/s"
        rows = [
            ("sustained throughput, 1 process", f"{rate:,.0f} rec/s",
             rate >= TARGET_RATE, f">= {TARGET_RATE:,.0f}"),
            ("share of raw consume ceiling", f"{share:.0%}",
             share >= TARGET_SHARE_OF_RAW, f">= {TARGET_SHARE_OF_RAW:.0%}"),
            ("speed-up over the predecessor", f"{speedup:.1f}x",
             speedup >= TARGET_SPEEDUP, f">= {TARGET_SPEEDUP:.0f}x"),
            (latency_name, f"{p99:.0f} ms", p99 <= TARGET_P99_MS,
             f"<= {TARGET_P99_MS:.0f} ms"),
        ]  # fmt: skip
        self.say("")
        self.say(
            f"Stream benchmark ({len(main):,} records, {os.cpu_count()} CPUs, "
            f"{connection.vendor})"
        )
        self.say(
            f"  one process, {len(rates)} runs:     "
            + " / ".join(f"{r:,.0f}" for r in rates)
            + " rec/s (the median is the throughput below)"
        )
        self.say(f"  raw consume+decode ceiling: {raw_rate:,.0f} rec/s")
        self.say(
            f"  stock kafka-python ceiling:  {stock_rate:,.0f} rec/s "
            f"({stock_checksum}, json; stream is {rate / stock_rate:.0%} of it)"
        )
        self.say(
            f"  one-at-a-time, scikit-learn: {single_rate:,.0f} rec/s (predecessor)"
        )
        self.say(
            f"  one-at-a-time, packed forest: {packed_rate:,.0f} rec/s "
            f"(stream is {rate / packed_rate:.1f}x)"
        )
        self.say(
            f"  latency p50 / p99 / max:    {p50:.0f} / {p99:.0f} / {worst:.0f} ms"
        )
        self.say(
            f"  two processes, one group:   {pair_rate:,.0f} rec/s "
            f"({pair_rate / rate:.2f}x one process; median of "
            + " / ".join(f"{r:,.0f}" for r in pair_rates)
            + ")"
        )
        for name, value, met, target in rows:
            mark = "met" if met else "MISSED"
            self.say(f"  {name:<34} {value:>12}  target {target:<10} {mark}")

    def records_simulate(self) -> tuple[list, list, list, list]:
        """Return history, then the main, latency and one-at-a-time segments."""
        options = self.options
        wanted = (
            options["records"]
            + math.ceil(options["latency_rate"] * options["latency_seconds"])
            + options["one_at_a_time_records"]
        )
        # The simulator makes about 2.5 to 3 transactions per cardholder and day.
        days = options["history_days"] + wanted / (2.0 * options["users"]) + 1
        records = list(
            simulate_transactions(
                users=options["users"], days=days, seed=options["seed"]
            )
        )
        cut = (
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=options["history_days"])
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
        history = [r for r in records if r["timestamp"] < cut]
        rest = records[len(history) :]
        if len(rest) < wanted:
            raise CommandError("The simulation is too short; lower --records.")
        main_end = options["records"]
        latency_end = main_end + math.ceil(
            options["latency_rate"] * options["latency_seconds"]
        )
        return (
            history,
            rest[:main_end],
            rest[main_end:latency_end],
            rest[latency_end:wanted],
        )

    def history_preload(self, history: list[dict]) -> None:
        """Score and store the history through the scoring core, in big batches,
        with its frauds labelled (as their chargebacks would have), so that the
        model's classifier is trained and its cost is in the figures."""
        store, provider = OrmStateStore(), ScoringConfigProvider()
        for start in range(0, len(history), 2000):
            messages = [
                transaction_message_parse(r) for r in history[start : start + 2000]
            ]
            transaction_batch_score_record(
                messages=messages,
                store=store,
                config=provider.current(),
                source="backfill",
            )
        frauds = Transaction.objects.filter(
            transaction_id__in=[r["transaction_id"] for r in history if r["is_fraud"]]
        )
        Label.objects.bulk_create(
            Label(transaction=record, is_fraud=True, source=Label.Source.CHARGEBACK)
            for record in frauds
        )

    def topic_new(self, name: str) -> str:
        """Create a fresh topic for one phase."""
        topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        kafka_topic_ensure(topic=topic)
        return topic

    def produce(self, topic: str, records: list[dict], rate: float | None = None):
        """Send records to a topic (paced when a rate is given)."""
        producer = producer_create()
        try:
            return transactions_produce(
                producer=producer, topic=topic, records=records, rate=rate
            )
        finally:
            producer.close(timeout=10)

    # --- phases -----------------------------------------------------------------

    def raw_consume_rate(self, topic: str, count: int) -> float:
        """Return kafka-python's consume + decode rate over the topic.

        Same client build (C crc32c) and decoder (orjson) as the stream, so the
        ceiling is what the stream would reach if scoring and storing cost nothing.
        """
        return raw_consume_rate(
            self.bootstrap,
            topic,
            count,
            decode=orjson.loads,
            consumer_options=CONSUMER_FETCH,
        )

    def raw_consume_rate_stock(self, topic: str, count: int) -> tuple[float, str]:
        """Return stock kafka-python's rate (pure-Python checksums, json.loads).

        Runs in a fresh interpreter that cannot import the C crc32c package.
        """
        result = subprocess.run(
            [sys.executable, "-m", "detection.benchmarks.raw", "--stock",
             "--fetch-max-wait-ms", str(CONSUMER_FETCH["fetch_max_wait_ms"]),
             self.bootstrap, topic, str(count)],
            cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
        if result.returncode != 0:
            raise CommandError(f"stock raw consumer failed:\n{result.stderr[-3000:]}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        return figures["rate"], figures["checksum"]

    def consumer_start(
        self,
        topic: str,
        log_name: str,
        *args: str,
        profile=None,
        database: str | None = None,
        group: str | None = None,
    ):
        """Start `consume_transactions` on the scratch database, DEBUG off."""
        env = {
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
            "DATABASE_URL": self.scratch.url(database or self.database),
            "KAFKA_BROKER": self.bootstrap,
            "REDIS_URL": self.redis_url,
            # Its own live-update channel group: the benchmark's verdicts must
            # not appear on the dashboard of a `make run` sharing this Redis.
            "CHANNEL_LAYER_PREFIX": f"bench-{uuid.uuid4().hex[:12]}",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        python = [sys.executable]
        if profile:
            # py-spy samples from outside the process: shares without cProfile's
            # 2x distortion of call-heavy code (kafka-python, the ORM).
            python = [
                str(Path(sys.executable).with_name("py-spy")), "record",
                "--nonblocking", "--rate", "250", "--format", "raw",
                "--output", str(profile), "--", *python,
            ]  # fmt: skip
        log = (self.workdir / log_name).open("wb")
        process = subprocess.Popen(
            [*python, "manage.py", "consume_transactions", "--topic", topic,
             "--group", group or f"bench-{uuid.uuid4().hex[:8]}", *args],
            cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()  # the child holds its own copy of the descriptor
        process.log_path = self.workdir / log_name
        self.processes.append(process)
        return process

    def processes_stop(self) -> None:
        """Stop consumers still running (an interrupted run): SIGTERM, then kill."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def consumer_finish(self, process) -> None:
        """Wait for a consumer to exit; fail with its log if it did not succeed."""
        try:
            status = process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            status = None
        if status != 0:
            raise CommandError(
                f"consumer failed ({status}):\n{process.log_path.read_text()[-3000:]}"
            )

    def scored_times(self, records: list[dict]) -> list[tuple]:
        """Return (received_at, scored_at) of the stored records, by scored_at."""
        ids = [r["transaction_id"] for r in records]
        rows: list[tuple] = []
        for chunk in key_chunks(ids):
            rows.extend(
                Transaction.objects.filter(transaction_id__in=chunk).values_list(
                    "received_at", "scored_at"
                )
            )
        if len(rows) != len(ids):
            raise CommandError(f"Only {len(rows)} of {len(ids)} records were stored.")
        return sorted(rows, key=lambda row: row[1])

    def consumers_rate(
        self,
        topic: str,
        records: list[dict],
        database: str,
        *,
        processes: int = 1,
        profile: Path | None = None,
    ) -> float:
        """Return the rate of consumers in one group (first to last scored_at).

        They consume the whole topic from the start under a group of their own,
        into `database` (the state after the preload, or a copy of it), and stop
        when caught up and idle. With `profile`, the one consumer runs under
        py-spy, which writes its samples there.
        """
        group = f"bench-scale-{uuid.uuid4().hex[:8]}"
        started = [
            self.consumer_start(
                topic,
                f"consumer-{Path(database).name}-{n}.log",
                "--stop-when-idle",
                "2",
                database=database,
                group=group,
                profile=profile,
            )
            for n in range(processes)
        ]
        for process in started:
            self.consumer_finish(process)
        self.scratch.use(database)
        try:
            times = self.scored_times(records)
        finally:
            self.scratch.use(self.database)
        return scored_rate(times)

    def latency(self, records: list[dict]) -> tuple[float, float, float, float]:
        """Return p50, p99 and max latency (ms) and the offered rate achieved."""
        topic = self.topic_new("latency")
        process = self.consumer_start(
            topic, "consumer-latency.log", "--stop-when-idle", "3"
        )
        deadline = time.monotonic() + 60
        while "partitions assigned" not in process.log_path.read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise CommandError("latency consumer did not join its group")
            time.sleep(0.1)
        sent = self.produce(topic, records, rate=self.options["latency_rate"])
        self.consumer_finish(process)
        millis = sorted(
            (scored - received).total_seconds() * 1000
            for received, scored in self.scored_times(records)
        )
        p50 = statistics.median(millis)
        p99 = millis[min(len(millis) - 1, math.ceil(0.99 * len(millis)) - 1)]
        return p50, p99, millis[-1], sent.rate

    def one_at_a_time_rate(self, records: list[dict], *, sklearn: bool) -> float:
        """Return the rate of a consumer that scores and stores record by record.

        This is how the predecessor worked: per record one model call, one insert
        and one database transaction, offsets auto-committed. With `sklearn` the
        model call is scikit-learn's `score_samples` on one row, as the
        predecessor made it; without, it is this project's packed forest, which
        isolates what batching alone gains. Runs in this process, DEBUG off.
        """
        topic = self.topic_new("one")
        self.produce(topic, records)
        one_at_a_time_consume(
            bootstrap=self.bootstrap, topic=topic, count=len(records), sklearn=sklearn
        )
        return scored_rate(self.scored_times(records))

    def profile_print(self, path: Path) -> None:
        """Print where the consumer's loop spent its time (py-spy samples)."""
        self.say(f"\nProfile of the throughput consumer ({path}, py-spy samples):")
        shares = loop_profile(path)
        for name, share in shares[:PROFILE_LINES]:
            self.say(f"  {share:6.1%}  {name}")
