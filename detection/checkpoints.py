"""SQLite upkeep for a busy writer: write-ahead-log checkpoints off the hot path."""

from __future__ import annotations

import logging
import sqlite3
import threading

from django.db import connection as default_connection
from django.db.backends.signals import connection_created

logger = logging.getLogger(__name__)

# How often the background thread folds the write-ahead log into the database,
# so that the scoring thread never runs (and waits for) a checkpoint's fsync.
# A checkpoint with nothing to do costs a few microseconds.
CHECKPOINT_SECONDS = 0.05
# SQLite's own default: the COMMIT that grows the log past this many pages runs
# a checkpoint itself.
SQLITE_AUTOCHECKPOINT_PAGES = 1_000
# The writer's threshold while the background thread checkpoints: a safety net
# only. At 1,000 pages (4 MB, two or three stream batches) the scoring thread
# ran a checkpoint in about every other COMMIT: 0.34 s of commits per 20,000
# records against 0.12 s with this, and a p90 commit of 17 ms against 4 ms
# (2026-11-30, batches of 500 scored and stored without Kafka).
WRITER_AUTOCHECKPOINT_PAGES = 10_000
# SQLite's default page cache, 2,000 KiB, is smaller than the pages one stream
# batch dirties (about 4 MB for 500 payments: the ledger's transaction_id and
# user_id indexes take each row to another page), so a batch spilled pages to
# the log before its COMMIT and read them back. The writer gets 64 MiB: 42.8
# against 47.5 us of inserts per record, in three paired runs 4 to 14 us less
# (batches of 500 scored and stored without Kafka, 2026-11-30). Web and Celery
# connections keep the default.
SQLITE_CACHE_KIB = 2_000
WRITER_CACHE_KIB = 65_536


def writer_pragmas_set(connection, *, busy_writer: bool) -> None:
    """Give a Django SQLite connection, if open, the busy writer's checkpoint
    threshold and page cache, or SQLite's defaults."""
    if connection.vendor != "sqlite" or connection.connection is None:
        return
    pages = WRITER_AUTOCHECKPOINT_PAGES if busy_writer else SQLITE_AUTOCHECKPOINT_PAGES
    cache = WRITER_CACHE_KIB if busy_writer else SQLITE_CACHE_KIB
    connection.connection.execute(f"PRAGMA wal_autocheckpoint={pages}")
    # Negative: a size in KiB, not in pages.
    connection.connection.execute(f"PRAGMA cache_size=-{cache}")


class SqliteCheckpointer:
    """Checkpoint a SQLite WAL database from a background thread.

    SQLite checkpoints automatically inside the COMMIT that grows the log past
    1,000 pages, and with the fsync that costs the committing batch 50 to 450 ms
    (`manage.py bench_stream` p99). Passive checkpoints from here keep the log
    short; sqlite3 releases the GIL while they work. While this runs, Django
    connections of this process to the same file (the scoring thread's, which
    the stream reopens every second) checkpoint only past
    WRITER_AUTOCHECKPOINT_PAGES, so that the writer never waits for one unless
    this thread falls far behind, and a page cache that holds a batch
    (WRITER_CACHE_KIB).
    """

    def __init__(self, path: str, *, interval: float = CHECKPOINT_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="sqlite-checkpointer", daemon=True
        )

    def start(self) -> SqliteCheckpointer:
        """Start checkpointing; return self."""
        self._thread.start()
        connection_created.connect(self._connection_created, weak=False)
        self._writer_pragmas(busy_writer=True)
        return self

    def stop(self) -> None:
        """Stop after the checkpoint in progress; give back SQLite's defaults."""
        connection_created.disconnect(self._connection_created)
        self._writer_pragmas(busy_writer=False)
        self._stop.set()
        self._thread.join(5)

    def _same_file(self, connection) -> bool:
        return connection.vendor == "sqlite" and str(
            connection.settings_dict["NAME"]
        ) == str(self.path)

    def _writer_pragmas(self, *, busy_writer: bool) -> None:
        """Set the pragmas of this thread's open connection to our file."""
        if self._same_file(default_connection):
            writer_pragmas_set(default_connection, busy_writer=busy_writer)

    def _connection_created(self, sender, connection, **kwargs) -> None:
        if self._same_file(connection):
            writer_pragmas_set(connection, busy_writer=True)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    # Best effort: the writer's own checkpoints still happen.
                    logger.debug("background checkpoint failed: %s", exc)
        finally:
            db.close()
