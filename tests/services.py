"""Pytest plugin providing Kafka and Redis servers for the test session.

Load it with `pytest_plugins = ["tests.services"]` in the root conftest, or with
`-p tests.services`. The fixtures need no Django:

- `kafka_bootstrap`: KAFKA_BROKER if set, else one embedded Tansu broker per session.
- `redis_url`: REDIS_URL (or the local default) if it answers PING, else an embedded
  redis-server per session.
- `kafka_topic`: a fresh six-partition topic per test; `kafka_topic_factory` makes
  more of them.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from detection.kafka import topic_ensure
from fraudsite.embedded import kafka_broker_resolve, redis_resolve

logger = logging.getLogger(__name__)

TOPIC_PARTITIONS = 6


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield a Kafka bootstrap address, starting a broker if KAFKA_BROKER is unset."""
    # Logs under pytest's temp root survive the run, for post-mortems of failures.
    bootstrap, broker = kafka_broker_resolve(
        os.environ.get("KAFKA_BROKER"), log_dir=tmp_path_factory.mktemp("kafka")
    )
    try:
        yield bootstrap
    finally:
        if broker is not None:
            broker.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield a Redis URL that answers PING, starting a server if none does."""
    url, server = redis_resolve(
        os.environ.get("REDIS_URL"), log_dir=tmp_path_factory.mktemp("redis")
    )
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def kafka_topic_factory(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Yield a function that creates a uniquely named topic and returns its name.

    The topics are deleted after the test, so a shared KAFKA_BROKER stays clean.
    """
    # Topic names allow only letters, digits, ".", "_" and "-", up to 249 chars.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80]
    created: list[str] = []

    def make(partitions: int = TOPIC_PARTITIONS) -> str:
        """Create a fresh topic with `partitions` partitions and return its name."""
        name = f"test-{stem}-{uuid.uuid4().hex[:10]}"
        topic_ensure(kafka_bootstrap, name, partitions)
        created.append(name)
        return name

    yield make

    if created:
        try:
            admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            try:
                admin.delete_topics(created)
            finally:
                admin.close()
        except KafkaError as exc:
            # A leftover uniquely named topic harms nobody; do not fail the test.
            logger.warning("Could not delete test topics %s: %s", created, exc)


@pytest.fixture
def kafka_topic(kafka_topic_factory: Callable[..., str]) -> str:
    """Return the name of a fresh six-partition topic for this test."""
    return kafka_topic_factory()
