"""Database steps of the stream, retried with backoff before anyone gives up.

Offsets are committed only after a batch is stored, so retrying (and in the end
giving up) loses nothing: the batch is redelivered to whoever consumes the
partition next.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, DataError, IntegrityError, connection

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = 0.2
RETRY_BACKOFF_MAX_SECONDS = 5.0
# Errors that name what was written, not the database's health: a value a column
# refuses (DataError: too long, out of range) or a constraint the validation
# missed (IntegrityError). An outage (OperationalError, InterfaceError, ...) is
# retried; these would fail the same way every time, so the stream isolates the
# records they come from instead (TransactionStream.batch_store_retrying).
REFUSED: tuple[type[DatabaseError], ...] = (DataError, IntegrityError)


class StreamDatabaseError(RuntimeError):
    """Raise when the database kept failing after every allowed retry."""


class BatchAbandoned(Exception):
    """A shutdown arrived while a failing batch waited to be retried."""


def database_retrying(
    attempt_once: Callable[[], _T],
    *,
    limit: int,
    backoff_seconds: float,
    shutdown: threading.Event,
    on_error: Callable[[], None],
    refused: tuple[type[DatabaseError], ...] = (),
) -> _T:
    """Return what `attempt_once` returns, retrying its database errors.

    The waits double from `backoff_seconds` up to RETRY_BACKOFF_MAX_SECONDS;
    after `limit` retries, raise StreamDatabaseError. `on_error` runs after each
    failure (counting it, dropping caches); a `shutdown` during a wait raises
    BatchAbandoned. A broken connection is replaced on the next query. Errors of
    the `refused` classes are raised at once: the database refusing what it was
    given (REFUSED) would refuse it again, whatever the wait.
    """
    attempt = 0
    while True:
        try:
            return attempt_once()
        except refused:
            raise
        except DatabaseError as exc:
            attempt += 1
            on_error()
            if not connection.in_atomic_block:
                connection.close()
            if attempt > limit:
                raise StreamDatabaseError(
                    f"Database failed {attempt} times in a row; giving up "
                    f"without committing offsets: {exc}"
                ) from exc
            delay = min(backoff_seconds * 2 ** (attempt - 1), RETRY_BACKOFF_MAX_SECONDS)
            logger.warning(
                "database error (attempt %d of %d), retrying in %.1f s: %s",
                attempt,
                limit,
                delay,
                exc,
            )
            if shutdown.wait(delay):
                raise BatchAbandoned from exc


class RefusalStreak:
    """Count the records the database refused alone in a row, none stored between.

    One record refused alone is that record's fault. A run of them with nothing
    stored between is the database's: a migration not applied, a constraint or
    trigger added by hand, a column narrowed. Dead-lettering the stream would
    only move every payment into the dead-letter table, unscored. At `limit`
    refusals in a row `refused` raises StreamDatabaseError: the consumer stops
    loudly, without committing offsets, like a database that kept failing
    (its callers store a batch's refusals only once the whole batch is through,
    so none of a batch refused to the end is a dead letter; a quiet stream of
    small batches may have dead-lettered the first `limit - 1`, to redrive).
    `limit` None never stops.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0

    def stored(self) -> None:
        """The database stored a record: the run is broken."""
        self.count = 0

    def refused(self, error: Exception) -> None:
        """Count one record refused alone; raise at the limit."""
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            raise StreamDatabaseError(
                f"The database refused {self.count} records in a row, each alone, "
                "and stored none between them: a fault of the database (a "
                "migration not applied, a constraint or trigger added), not of "
                "the records. Stopping without committing offsets; mend it and "
                f"start again. The last refusal: {error}"
            ) from error


def refusals_isolated(
    count: int,
    attempt: Callable[[int, int], _T],
    refused: Callable[[int, int, Exception], _T],
    combine: Callable[[_T, _T], _T],
    streak: RefusalStreak | None = None,
) -> _T:
    """Store items [0, count) through `attempt(start, stop)`, isolating refusals.

    `attempt` stores items[start:stop] in one transaction, retrying outages,
    and raises the REFUSED errors (`database_retrying(refused=REFUSED)`). When
    the database refuses a part, its halves are stored in order, each its own
    transaction (a card's state stays sequential), halving what is refused
    again until the item to blame is alone. An item refused alone is tried once
    more (the attempt sees what other writers stored meanwhile, an id taken
    since), then `refused(start, stop, error)` makes it a dead letter. `combine`
    joins two halves' results, in order. The stream and the chargeback consumer
    both store through this. `streak` counts the refusals in a row and stops
    them at its limit (RefusalStreak), before `refused` is called.
    """

    def stored(start: int, stop: int) -> _T:
        result = attempt(start, stop)
        if streak is not None and stop > start:
            streak.stored()
        return result

    def part(start: int, stop: int) -> _T:
        try:
            return stored(start, stop)
        except REFUSED as exc:
            if stop - start <= 1:
                try:
                    return stored(start, stop)
                except REFUSED as again:
                    if streak is not None:
                        streak.refused(again)
                    return refused(start, stop, again)
            logger.info(
                "the database refused %d records, storing them in halves to find "
                "the one to blame: %s",
                stop - start,
                exc,
            )
            middle = (start + stop) // 2
            return combine(part(start, middle), part(middle, stop))

    return part(0, count)
