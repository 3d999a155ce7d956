"""The stream's background WAL checkpoints on SQLite."""

from __future__ import annotations

import sqlite3
import time

import pytest
from django.db import connection, connections

from detection.checkpoints import (
    SQLITE_AUTOCHECKPOINT_PAGES,
    SQLITE_CACHE_KIB,
    WRITER_AUTOCHECKPOINT_PAGES,
    WRITER_CACHE_KIB,
    SqliteCheckpointer,
)

BUSY_WRITER = (WRITER_AUTOCHECKPOINT_PAGES, -WRITER_CACHE_KIB)
SQLITE_DEFAULTS = (SQLITE_AUTOCHECKPOINT_PAGES, -SQLITE_CACHE_KIB)


def pragmas(conn) -> tuple[int, int]:
    """Return a connection's (wal_autocheckpoint, cache_size)."""
    with conn.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        pages = cursor.fetchone()[0]
        cursor.execute("PRAGMA cache_size")
        return pages, cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_writer_leaves_checkpoints_to_the_background_thread_while_it_runs():
    """While the checkpointer runs, this process's connections to the file (the
    open one, and those the stream reopens every second) checkpoint only far past
    SQLite's 1,000 pages, with a page cache that holds a batch; afterwards
    SQLite's defaults are back."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write-ahead log; this run uses another database")
    connection.ensure_connection()
    assert pragmas(connection) == SQLITE_DEFAULTS
    checkpointer = SqliteCheckpointer(str(connection.settings_dict["NAME"])).start()
    reopened = connections.create_connection("default")
    try:
        assert pragmas(connection) == BUSY_WRITER
        reopened.ensure_connection()
        assert pragmas(reopened) == BUSY_WRITER
    finally:
        reopened.close()
        checkpointer.stop()
    assert pragmas(connection) == SQLITE_DEFAULTS
    after = connections.create_connection("default")
    try:
        after.ensure_connection()
        assert pragmas(after) == SQLITE_DEFAULTS
    finally:
        after.close()


def test_the_checkpointer_folds_the_log_into_the_database(tmp_path):
    """A writer that never checkpoints itself still gets its pages into the
    database file: the background thread copies them there."""
    path = tmp_path / "ledger.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    checkpointer = None
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE t (payload TEXT)")
        writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = path.stat().st_size
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 2000)
        writer.execute("COMMIT")
        assert path.stat().st_size == before  # all of it still in the log
        checkpointer = SqliteCheckpointer(str(path), interval=0.01).start()
        deadline = time.monotonic() + 30
        while path.stat().st_size < before + 1_000_000:
            assert time.monotonic() < deadline, "no checkpoint within 30 s"
            time.sleep(0.01)  # polling a file size, with a deadline
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        writer.close()
