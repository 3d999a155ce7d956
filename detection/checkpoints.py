"""SQLite upkeep for a busy writer: write-ahead-log checkpoints off the hot path."""

from __future__ import annotations

import logging
import sqlite3
import threading

logger = logging.getLogger(__name__)

# How often the background thread folds the write-ahead log into the database,
# so that the scoring thread never runs (and waits for) a checkpoint's fsync.
CHECKPOINT_SECONDS = 0.25


class SqliteCheckpointer:
    """Checkpoint a SQLite WAL database from a background thread.

    SQLite checkpoints automatically inside the COMMIT that grows the log past
    1,000 pages, and with the fsync that costs the committing batch 50 to 450 ms
    (`manage.py bench_stream` p99). Passive checkpoints from here keep the log
    short, so that automatic checkpoint rarely has anything to do; sqlite3
    releases the GIL while it works.
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
        return self

    def stop(self) -> None:
        """Stop after the checkpoint in progress."""
        self._stop.set()
        self._thread.join(5)

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
