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
from kafka import KafkaConsumer, KafkaProducer

from fraudsite import embedded

logger = logging.getLogger(__name__)


def kafka_bootstrap(bootstrap: str | None = None) -> str:
    """Return the broker address to use, or raise when none is configured."""
    address = bootstrap or settings.KAFKA_BROKER
    if not address:
        raise ImproperlyConfigured(
            "KAFKA_BROKER is not set: point it at a broker (`make run` starts an "
            "embedded one and sets it)."
        )
    return address


def kafka_topic_ensure(
    *, bootstrap: str | None = None, topic: str, partitions: int | None = None
) -> None:
    """Create the topic when missing (KAFKA_TOPIC_PARTITIONS) and wait until usable.

    Call it before any client touches the topic: brokers auto-create unknown
    topics with their own partition count, which cannot be changed afterwards.
    """
    embedded.kafka_topic_ensure(
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
        # Fast group joins and short fetch waits: see fraudsite.embedded for the
        # measurements; both are valid against Apache Kafka too.
        **embedded.KAFKA_CONSUMER_GROUP_TIMEOUTS,
        **embedded.KAFKA_CONSUMER_FETCH,
        # Shorter still: the embedded broker answers a waiting fetch only after
        # half of this, even when records arrive, and that wait is stream latency
        # (bench_stream p99). Apache Kafka answers as soon as records arrive, so
        # this only makes an idle consumer ask more often.
        "fetch_max_wait_ms": 20,
    }
    config.update(overrides)
    return KafkaConsumer(**config)


@dataclass
class ProduceReport:
    """What one produce run sent."""

    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        """Return records per second over the run."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


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
    """Return the Kafka key of a record: its user_id, so one consumer owns a user."""
    if isinstance(value, dict):
        user_id = value.get("user_id")
    else:
        try:
            user_id = json.loads(value).get("user_id")
        except (ValueError, AttributeError, RecursionError):
            return None
    return str(user_id).encode() if user_id is not None else None


def transactions_produce(
    *,
    producer: KafkaProducer,
    topic: str,
    records: Iterable[dict | bytes],
    count: int | None = None,
    rate: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Send records (dicts are JSON-encoded) keyed by user_id, optionally paced.

    Stop after `count` records, when `records` ends, or when `stop` is set. With a
    `rate` the sends follow a fixed schedule (record n at start + n / rate), so the
    offered load stays steady even when a send is briefly slow. Flush before
    returning: every counted record is on the broker.
    """
    started = time.monotonic()
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
        producer.send(topic, key=key, value=value)
        sent += 1
        if progress is not None and sent % 1000 == 0:
            progress(1000)
    producer.flush()
    if progress is not None and sent % 1000:
        progress(sent % 1000)
    return ProduceReport(sent=sent, seconds=time.monotonic() - started)
