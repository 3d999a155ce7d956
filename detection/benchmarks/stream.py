"""The stream benchmark's baseline consumer and its rate arithmetic."""

from __future__ import annotations

import dataclasses
import time

import skops.io as sio
from django.core.management.base import CommandError
from kafka import KafkaConsumer, TopicPartition

from detection.kafka import CONSUMER_FETCH
from detection.profiles import OrmStateStore
from detection.records import record_decode
from detection.registry import LoadedModel, model_active_row
from detection.scoring import ScoringConfigProvider
from detection.services import transaction_batch_score_record

DEADLINE_SECONDS = 600.0


def model_as_predecessor(model: LoadedModel) -> LoadedModel:
    """Return the active model evaluated by scikit-learn, as the predecessor did.

    Same trees, same scores; only the evaluation differs: scikit-learn's
    `score_samples` instead of the packed arrays of `detection.forest`.
    """
    artifact = bytes(model_active_row().artifact)
    # The registry's rule: trust scikit-learn's own types and nothing else.
    trusted = [
        name
        for name in sio.get_untrusted_types(data=artifact)
        if name.startswith("sklearn.")
    ]
    return dataclasses.replace(model, forest=sio.loads(artifact, trusted=trusted))


def scored_rate(times: list[tuple]) -> float:
    """Return rows per second from the first to the last scored_at.

    `times` are (received_at, scored_at) sorted by scored_at. The rows of the first
    batch share its scored_at, so the rate counts the rows stored after it.
    """
    first, last = times[0][1], times[-1][1]
    seconds = (last - first).total_seconds()
    if seconds <= 0:
        raise CommandError("Every record landed in one batch; raise --records.")
    return sum(1 for _received, scored in times if scored > first) / seconds


def one_at_a_time_consume(
    *, bootstrap: str, topic: str, count: int, sklearn: bool
) -> int:
    """Consume `count` records of the topic the predecessor's way; return how many.

    Per record: one model call, one insert, one database transaction; offsets are
    left to the client. With `sklearn` the model call is scikit-learn's
    `score_samples` on one row, as the predecessor made it; without, it is the
    packed forest, which isolates what batching alone gains.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **CONSUMER_FETCH,
    )
    store, config = OrmStateStore(), ScoringConfigProvider().current()
    if sklearn:
        config = dataclasses.replace(config, model=model_as_predecessor(config.model))
    try:
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen, deadline = 0, time.monotonic() + DEADLINE_SECONDS
        while seen < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    transaction_batch_score_record(
                        messages=[record_decode(record)],
                        store=store,
                        config=config,
                        source="stream",
                    )
                    seen += 1
    finally:
        consumer.close()
    return seen


# The consumer's loop: samples outside it (start-up, other threads) are left out.
LOOP_FRAME = "TransactionStream.run"


def loop_profile(path) -> list[tuple[str, float]]:
    """Return (function, share of the loop's samples) from a py-spy raw profile.

    Each line of the file is a stack, outermost frame first, frames separated by
    ";" and written "name (path:line)", then a space and the sample count. A
    function's share is inclusive (its callees count) and counted once per stack,
    so recursion does not inflate it. Highest share first.
    """
    inclusive: dict[str, int] = {}
    total = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = [_frame_name(frame) for frame in stack.split(";")]
            if LOOP_FRAME not in frames:
                continue
            samples = int(count)
            total += samples
            for name in set(frames[frames.index(LOOP_FRAME) :]):
                inclusive[name] = inclusive.get(name, 0) + samples
    if not total:
        return []
    shares = [(name, samples / total) for name, samples in inclusive.items()]
    return sorted(shares, key=lambda item: (-item[1], item[0]))


def _frame_name(frame: str) -> str:
    """Return "function (file.py)" for py-spy's "function (path/file.py:line)"."""
    function, _, where = frame.partition(" (")
    if not where or function == LOOP_FRAME:
        return function
    filename = where.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{function} ({filename})"
