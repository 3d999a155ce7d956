"""What the embedded servers share: a child process on a free loopback port.

Each server runs in its own session (a terminal's Ctrl-C reaches the parent,
which decides the shutdown order), bound to a free port (retried on another
when taken), with its output in a log file; `stop()` terminates it and is safe
to call twice, and unstopped servers are terminated when the interpreter exits
or, on Linux, when the parent dies in any way (fraudsite.processes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Self

from fraudsite.processes import parent_death_signal

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.05
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 30


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is unused at the time of the call.

    The port is released before returning, so another process may take it first;
    the embedded servers detect that and retry on a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class PortTakenError(Exception):
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


class EmbeddedServer:
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
        """Return True once the server is ready; raise PortTakenError if not ours."""
        raise NotImplementedError

    def _start(self) -> None:
        """Spawn the server and wait until it is ready, retrying on port clashes."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn()
            started = time.monotonic()
            try:
                self._wait_ready(offset)
            except PortTakenError:
                self._stop_process()
                logger.info(
                    "%s lost port %d to another process (attempt %d of %d)",
                    self.name,
                    self.port,
                    attempt,
                    PORT_ATTEMPTS,
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
            f"{self.name} could not bind a free port in {PORT_ATTEMPTS} attempts; "
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
                    raise PortTakenError
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
            time.sleep(POLL_INTERVAL)

    def _log_tail(self, offset: int = 0) -> str:
        """Return the last lines the server wrote after `offset`."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        lines = text.splitlines()[-LOG_TAIL_LINES:]
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
