"""Start throwaway Kafka (Tansu) and Redis servers for local runs and tests.

The launcher imports this package before Django is configured, so it must not
import Django.

- `free_port()`: a currently unused TCP port on 127.0.0.1 (`server`).
- `EmbeddedKafka`, `kafka_broker_resolve(env_value)` (`kafka_server`, with what
  was measured of Tansu).
- `EmbeddedRedis`, `redis_resolve(env_value)`, `bundled_redis_server()`
  (`redis_server`).

Topic creation and the consumer settings these facts led to live with the Kafka
clients, in `detection.kafka` (`topic_ensure`, `CONSUMER_GROUP_TIMEOUTS`,
`CONSUMER_FETCH`).
"""

from fraudsite.embedded.kafka_server import EmbeddedKafka, kafka_broker_resolve
from fraudsite.embedded.redis_server import (
    DEFAULT_REDIS_URL,
    EmbeddedRedis,
    bundled_redis_server,
    redis_resolve,
)
from fraudsite.embedded.server import LOOPBACK, free_port

__all__ = [
    "DEFAULT_REDIS_URL",
    "LOOPBACK",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "bundled_redis_server",
    "free_port",
    "kafka_broker_resolve",
    "redis_resolve",
]
