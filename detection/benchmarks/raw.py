"""The raw consume ceiling of `manage.py bench_stream`: kafka-python reading a topic.

No Django here: `python -m detection.benchmarks.raw --stock BOOTSTRAP TOPIC COUNT`
runs it in a fresh interpreter where the C `crc32c` package is hidden, to measure
stock kafka-python (pure-Python record checksums) with the standard json module.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

# Records per poll and bytes per partition fetch: the stream consumer's settings.
MAX_POLL_RECORDS = 500
MAX_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
DEADLINE_SECONDS = 600.0


def raw_consume_rate(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    decode: Callable[[bytes], object],
    consumer_options: dict | None = None,
) -> float:
    """Return records/s of reading `count` records of the topic and decoding each."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        max_poll_records=MAX_POLL_RECORDS,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        **(consumer_options or {}),
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen, first = 0, None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while seen < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                first = first or time.monotonic()
                for record in records:
                    decode(record.value)
                seen += len(records)
        if first is None or seen < count:
            raise RuntimeError(f"read {seen} of {count} records before the deadline")
        return seen / (time.monotonic() - first)
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", action="store_true", help="Hide C crc32c.")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=100)
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.stock:
        # kafka-python uses the C checksum only when `import crc32c` works.
        sys.modules["crc32c"] = None  # type: ignore[assignment]
    rate = raw_consume_rate(
        args.bootstrap,
        args.topic,
        args.count,
        decode=json.loads,
        consumer_options={"fetch_max_wait_ms": args.fetch_max_wait_ms},
    )
    from kafka.record import util

    checksum = "C crc32c" if util.crc32c_c is not None else "pure-Python crc32c"
    print(json.dumps({"rate": rate, "checksum": checksum}))


if __name__ == "__main__":
    main()
