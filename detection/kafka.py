"""Kafka clients for the transaction stream: one place for their settings.

The producer command, the consumer command and the benchmark build their clients
here, so the same settings serve the embedded broker (tests, `make run`) and Apache
Kafka (docker-compose, production).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.net.compat import KafkaNetClient

logger = logging.getLogger(__name__)

# Measured against the embedded broker (fraudsite.embedded.kafka_server has the
# details); both are valid against Apache Kafka too.
# Tansu answers a JoinGroup after about session_timeout_ms / 2, so the client default
# (45 s) costs 23 s per join; 6 s is also the minimum a stock Kafka broker allows.
CONSUMER_GROUP_TIMEOUTS: dict[str, int] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
}

# Tansu answers an empty fetch after fetch_max_wait_ms / 2 even if records arrive
# meanwhile, so the default 500 ms adds up to 250 ms of latency to every event.
CONSUMER_FETCH: dict[str, int] = {"fetch_max_wait_ms": 100}

TOPIC_POLL_SECONDS = 0.05

# kafka-python 3 does all network I/O on a background thread and logs a warning
# ("blocking the event loop ... Other pollers will time out") when one step of it
# takes longer than its slow_task_threshold_secs, 0.1 s by default, by the wall
# clock. In our processes the main thread scores or produces and holds the GIL;
# the I/O thread waits for it after every socket call, up to the 5 ms switch
# interval each time, and a step of a few dozen calls passes 0.1 s without any
# loop at fault. Measured (2026-12-01): producing 50,000 records as fast as
# possible, then consuming them, logged 2 or 3 steps of 122-177 ms with the
# default switch interval and none at 0.5 ms, in two runs each. 1 s still
# reports a stall that would put the group session (6 s) at risk.
NETWORK_SLOW_STEP_SECONDS = 1.0


def network_client(**configs) -> KafkaNetClient:
    """Return kafka-python's network client with our slow-step threshold (above);
    the `kafka_client` of the stream's consumers and producers."""
    configs.setdefault("slow_task_threshold_secs", NETWORK_SLOW_STEP_SECONDS)
    return KafkaNetClient(**configs)


def kafka_bootstrap(bootstrap: str | None = None) -> str:
    """Return the broker address to use, or raise when none is configured."""
    address = bootstrap or settings.KAFKA_BROKER
    if not address:
        raise ImproperlyConfigured(
            "KAFKA_BROKER is not set: point it at a broker (`make run` starts an "
            "embedded one and sets it)."
        )
    return address


def _topic_partitions_ready(admin: KafkaAdminClient, topic: str) -> int | None:
    """Return the topic's partition count once every partition has a leader."""
    (info,) = admin.describe_topics([topic])
    partitions = info.get("partitions") or []
    if info.get("error_code") or not partitions:
        return None
    if any(p["error_code"] or p["leader_id"] < 0 for p in partitions):
        return None
    return len(partitions)


def topic_ensure(
    bootstrap: str,
    topic: str,
    partitions: int = 6,
    *,
    replication_factor: int = -1,
    timeout: float = 30.0,
) -> None:
    """Create `topic` if missing and wait until its partitions are usable.

    An existing topic is accepted as it is; a warning is logged when its partition
    count differs, since neither Tansu nor this function can change it. The default
    replication factor of -1 means the broker's default (1 on Tansu). Raise
    RuntimeError if the topic is not ready within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="fraudsite-topic-ensure",
        bootstrap_timeout_ms=int(timeout * 1000),
    )
    try:
        created = True
        try:
            admin.create_topics(
                {
                    topic: {
                        "num_partitions": partitions,
                        "replication_factor": replication_factor,
                    }
                }
            )
        except TopicAlreadyExistsError:
            # Another worker or an earlier run created it; that is the normal case.
            created = False
        while True:
            found = _topic_partitions_ready(admin, topic)
            # A topic we just created may show up before all its partitions do.
            if found is not None and (found == partitions or not created):
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Kafka topic {topic!r} on {bootstrap} did not show "
                    f"{partitions} ready partitions within {timeout:.0f} s "
                    f"(last seen: {found})"
                )
            time.sleep(TOPIC_POLL_SECONDS)
    finally:
        admin.close()
    if created:
        logger.info("Created Kafka topic %s with %d partitions", topic, partitions)
    elif found != partitions:
        logger.warning(
            "Kafka topic %s already exists with %d partitions, not %d "
            "(auto-created by a client before it was ensured?)",
            topic,
            found,
            partitions,
        )


def group_lag(bootstrap: str, group: str, topic: str) -> int | None:
    """Return the records of `topic` the consumer group has not committed yet.

    None when it cannot be told (the broker does not answer, the topic has no
    partitions yet). Uses no Django settings: the launcher calls it.
    """
    try:
        # Not subscribed, so this client never joins (or disturbs) the group.
        client = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            request_timeout_ms=5000,
        )
    except KafkaError:
        return None
    try:
        partitions = client.partitions_for_topic(topic)
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = client.end_offsets(tps)
        return sum(max(ends[tp] - (client.committed(tp) or 0), 0) for tp in tps)
    except KafkaError:
        return None
    finally:
        client.close()


def topic_last_records(
    topic: str, *, bootstrap: str | None = None, timeout_seconds: float = 10.0
) -> list:
    """Return the last record of each partition of `topic` that holds one (not
    through a group: nothing is committed or disturbed).

    A partition that does not answer within `timeout_seconds` is left out.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap(bootstrap),
        enable_auto_commit=False,
        kafka_client=network_client,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        firsts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        last = {tp: ends[tp] - 1 for tp in tps if ends[tp] > firsts[tp]}
        if not last:
            return []
        consumer.assign(list(last))
        for tp, offset in last.items():
            consumer.seek(tp, offset)
        found: dict[TopicPartition, object] = {}
        deadline = time.monotonic() + timeout_seconds
        while len(found) < len(last) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if record.offset >= last[tp]:
                        found[tp] = record
        return list(found.values())
    finally:
        consumer.close()


def kafka_topic_ensure(
    *, bootstrap: str | None = None, topic: str, partitions: int | None = None
) -> None:
    """Create the topic when missing (KAFKA_TOPIC_PARTITIONS) and wait until usable.

    Call it before any client touches the topic: brokers auto-create unknown
    topics with their own partition count, which cannot be changed afterwards.
    """
    topic_ensure(
        kafka_bootstrap(bootstrap),
        topic,
        partitions or settings.KAFKA_TOPIC_PARTITIONS,
    )


def producer_create(*, bootstrap: str | None = None, **overrides) -> KafkaProducer:
    """Return a producer for transaction messages (bytes keys and values)."""
    config = {
        "bootstrap_servers": kafka_bootstrap(bootstrap),
        "client_id": "fraudsite-producer",
        # A record counts as sent only once the broker has it (the crash test
        # compares the produced set with the stored one).
        "acks": "all",
        # A few milliseconds of lingering packs records into large requests, which
        # is most of the producer's throughput; the latency cost is negligible.
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "retries": 5,
        "kafka_client": network_client,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer_create(
    *,
    bootstrap: str | None = None,
    group_id: str | None = None,
    client_id: str = "fraudsite-consumer",
    **overrides,
) -> KafkaConsumer:
    """Return a group consumer that never commits on its own.

    Offsets are committed by the stream only after a batch's database transaction
    committed, which is what makes a crash lose nothing.
    """
    config = {
        "bootstrap_servers": kafka_bootstrap(bootstrap),
        "group_id": group_id or settings.KAFKA_CONSUMER_GROUP,
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.STREAM_BATCH_MAX_RECORDS,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        # Fast group joins and short fetch waits (see the constants above).
        **CONSUMER_GROUP_TIMEOUTS,
        **CONSUMER_FETCH,
        # Shorter still: the embedded broker answers a waiting fetch only after
        # half of this, even when records arrive, and that wait is stream latency
        # (bench_stream p99). Apache Kafka answers as soon as records arrive, so
        # this only makes an idle consumer ask more often.
        "fetch_max_wait_ms": 20,
        "kafka_client": network_client,
    }
    config.update(overrides)
    return KafkaConsumer(**config)


@dataclass
class ProduceReport:
    """What one produce run sent, and what the broker said of it."""

    sent: int
    seconds: float
    # Acknowledged by the broker (acks=all), and refused or expired.
    delivered: int = 0
    failed: int = 0
    first_error: str = ""

    @property
    def rate(self) -> float:
        """Return records per second over the run."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def unconfirmed(self) -> int:
        """Return how many sends have no answer yet (a flush given up)."""
        return self.sent - self.delivered - self.failed


class _Deliveries:
    """Count the broker's answers to sends (called on the producer's I/O thread).

    kafka-python's flush() only logs a send that failed; without this a run
    whose broker went away would report every record as sent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.first_error = ""

    def ok(self, _metadata) -> None:
        with self._lock:
            self.delivered += 1

    def error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if not self.first_error:
                self.first_error = f"{type(exc).__name__}: {exc}"

    def report(self, *, sent: int, seconds: float) -> ProduceReport:
        """Return the run's report with the answers counted so far."""
        with self._lock:
            return ProduceReport(
                sent=sent,
                seconds=seconds,
                delivered=self.delivered,
                failed=self.failed,
                first_error=self.first_error,
            )


# A flush waits in steps this long, so that a second Ctrl-C can give it up.
FLUSH_STEP_SECONDS = 0.5


def records_from_file(path: str | Path) -> Iterator[bytes]:
    """Yield the non-blank lines of a JSON Lines file as raw values.

    Lines are sent as they are (not re-encoded), so a replayed file can carry
    records the consumer must refuse; they end in its dead-letter table.
    """
    with Path(path).open("rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield line


def record_key(value: bytes | dict) -> bytes | None:
    """Return the Kafka key of a record: its user_id, so one consumer owns a user.

    Normalised as the consumer's validation stores it (surrounding whitespace
    dropped): "card-1" and "card-1\t" are one card, so one partition.
    """
    if isinstance(value, dict):
        user_id = value.get("user_id")
    else:
        try:
            user_id = json.loads(value).get("user_id")
        except (ValueError, AttributeError, RecursionError):
            return None
    return str(user_id).strip().encode() if user_id is not None else None


def transactions_produce(
    *,
    producer: KafkaProducer,
    topic: str,
    records: Iterable[dict | bytes],
    count: int | None = None,
    rate: float | None = None,
    stop: threading.Event | None = None,
    abandon: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    on_sent: Callable[[dict | bytes], None] | None = None,
) -> ProduceReport:
    """Send records (dicts are JSON-encoded) keyed by user_id, optionally paced.

    Stop after `count` records, when `records` ends, or when `stop` is set. With a
    `rate` the sends follow a fixed schedule (record n at start + n / rate), so the
    offered load stays steady even when a send is briefly slow. `on_sent` sees
    each record after its send (the simulated chargebacks). Flush before
    returning, until every send is answered or `abandon` is set; the report says
    how many the broker acknowledged and how many failed.
    """
    started = time.monotonic()
    deliveries = _Deliveries()
    sent = 0
    for record in records:
        if (count is not None and sent >= count) or (stop and stop.is_set()):
            break
        if rate:
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                # Pacing an offered load, not waiting for another process.
                time.sleep(delay)
        if isinstance(record, dict):
            key = record_key(record)
            value = json.dumps(record, separators=(",", ":")).encode()
        else:
            key, value = record_key(record), record
        future = producer.send(topic, key=key, value=value)
        future.add_callback(deliveries.ok)
        future.add_errback(deliveries.error)
        sent += 1
        if on_sent is not None:
            on_sent(record)
        if progress is not None and sent % 1000 == 0:
            progress(1000)
    while not (abandon and abandon.is_set()):
        try:
            producer.flush(timeout=FLUSH_STEP_SECONDS)
            break
        except KafkaTimeoutError:
            continue
    if progress is not None and sent % 1000:
        progress(sent % 1000)
    return deliveries.report(sent=sent, seconds=time.monotonic() - started)
