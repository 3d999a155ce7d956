"""The stream consumer: micro-batches from Kafka, scored inline, committed safely.

Each batch is decoded and validated, scored through the scoring core, and written
(verdicts, user state, dead letters) to the database BEFORE its Kafka offsets are
committed. A crash anywhere therefore redelivers the batch (at-least-once), and the
score-and-record service skips transaction ids that are already stored, so nothing
is lost and nothing is applied twice. The loop is small methods that tests call
directly; `manage.py consume_transactions` only parses options and calls `run`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from detection.checkpoints import SqliteCheckpointer
from detection.events import VerdictsPublisher
from detection.models import DeadLetter
from detection.profiles import OrmStateStore
from detection.records import (
    dead_letter_build,
    dead_letters_store,
    offsets_next,
    records_decode,
)
from detection.retrying import (
    REFUSED,
    RETRY_BACKOFF_SECONDS,
    BatchAbandoned,
    RefusalStreak,
    database_retrying,
    refusals_isolated,
)
from detection.scoring import ScoringConfigProvider
from detection.services import (
    RecordedBatch,
    transaction_batch_score_record,
    transaction_id_conflicts,
)
from fraudsite.processes import DRAIN_REQUESTED
from transactions.messages import TransactionMessage

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

# A draining consumer (SIGUSR1) stops after polls bring nothing for this long.
DRAIN_IDLE_SECONDS = 1.0
# How often the loop lets Django drop expired or broken connections. Not after every
# batch: with CONN_MAX_AGE=0 (the SQLite default) that would close and reopen the
# database 20 times a second, and closing a WAL database checkpoints it (~7 ms).
CONNECTION_CHECK_SECONDS = 1.0
# A member holding no partition says so this often (unassigned_warn).
UNASSIGNED_WARN_SECONDS = 30.0
# "Take it from the settings" where None means "no limit".
_SETTING = object()


@dataclass
class StreamReport:
    """What a consumer run did, for the command's summary and for tests."""

    records: int = 0
    created: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    # Batches scored again under the write lock: another writer (an API call, the
    # partition's previous owner) moved one of their users on meanwhile.
    rescored: int = 0
    db_retries: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        """Return the run's wall time so far."""
        return time.monotonic() - self.started


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stream: TransactionStream) -> None:
        self.stream = stream

    def on_partitions_revoked(self, revoked):
        self.stream.partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.stream.partitions_assigned(assigned)


class TransactionStream:
    """A consumer-group member that scores transactions in micro-batches."""

    # What the progress log calls the records a batch stored, and its replays.
    created_word = "scored"
    duplicate_word = "already stored"

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        topic: str,
        store: OrmStateStore | None = None,
        config_provider: ScoringConfigProvider | None = None,
        publisher: VerdictsPublisher | None = None,
        dead_letter_producer: KafkaProducer | None = None,
        dead_letter_topic: str = "",
        batch_max_records: int | None = None,
        batch_max_wait_ms: int | None = None,
        retry_limit: int | None = None,
        retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
        progress_interval: float | None = None,
        refused_in_a_row: int | object | None = _SETTING,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.store = store or OrmStateStore()
        self.config_provider = config_provider or ScoringConfigProvider()
        self.publisher = publisher
        self.dead_letter_producer = dead_letter_producer
        self.dead_letter_topic = dead_letter_topic
        self.batch_max_records = batch_max_records or settings.STREAM_BATCH_MAX_RECORDS
        self.batch_max_wait = (
            batch_max_wait_ms
            if batch_max_wait_ms is not None
            else settings.STREAM_BATCH_MAX_WAIT_MS
        ) / 1000
        self.retry_limit = (
            settings.STREAM_DB_RETRY_LIMIT if retry_limit is None else retry_limit
        )
        self.retry_backoff_seconds = retry_backoff_seconds
        self.refusal_streak = RefusalStreak(
            settings.STREAM_DB_REFUSED_IN_A_ROW
            if refused_in_a_row is _SETTING
            else refused_in_a_row
        )
        self.progress_interval = (
            settings.STREAM_PROGRESS_LOG_SECONDS
            if progress_interval is None
            else progress_interval
        )
        self._progress_at = time.monotonic()
        self._progress_seen = StreamReport()
        self.shutdown = threading.Event()
        # Set by SIGUSR1: stop once everything on the topic is scored.
        self.drain = threading.Event()
        self.report = StreamReport()
        self.assigned_once = False
        self._pending: list = []
        self._last_activity = time.monotonic()
        self._connections_checked = time.monotonic()
        self._unassigned_since = time.monotonic()

    # --- group membership -----------------------------------------------------

    def subscribe(self) -> None:
        """Join the consumer group on the topic, watching rebalances."""
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))

    def partitions_revoked(self, revoked) -> None:
        """Drop records held for partitions that move away, and forget state.

        Their new owner starts from the last committed offset, so the records are
        not lost; scoring them here too would race it for the same users.
        """
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._pending = [r for r in self._pending if (r.topic, r.partition) not in gone]
        self.store.cache_clear()
        if revoked:
            logger.info("partitions revoked: %s", _partitions_text(revoked))

    def partitions_assigned(self, assigned) -> None:
        """Forget cached state: users who moved here are read from the database."""
        self.store.cache_clear()
        self.assigned_once = True
        self._last_activity = self._unassigned_since = time.monotonic()
        logger.info("partitions assigned: %s", _partitions_text(assigned))

    # --- signals ----------------------------------------------------------------

    def signals_install(self) -> Callable[[], None]:
        """Make SIGTERM/SIGINT finish the batch in hand, and SIGUSR1 consume
        everything there is, then stop (idle for DRAIN_IDLE_SECONDS); return a
        restorer."""
        previous = {
            sig: signal.signal(sig, self._signal_received)
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._drain_received)
        if DRAIN_REQUESTED.is_set():
            # Asked while the command was still starting (manage.py).
            logger.info(
                "SIGUSR1 received while starting: scoring what is on the topic, "
                "then stopping"
            )
            self.drain.set()

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _drain_received(self, signum, frame) -> None:
        logger.info(
            "SIGUSR1 received: scoring what is left on the topic, then stopping"
        )
        self.drain.set()

    def _signal_received(self, signum, frame) -> None:
        logger.info(
            "%s received: finishing the batch in hand", signal.strsignal(signum)
        )
        self.shutdown.set()

    # --- one batch --------------------------------------------------------------

    def batch_poll(self, *, max_records: int | None = None) -> list:
        """Return the next micro-batch: up to max records or max wait, from now.

        A quiet topic gives an empty batch after the max wait; a busy one fills
        without waiting. Counting the wait from the call, not from the first
        record, bounds the latency a batch adds to batch_max_wait.
        """
        limit = min(max_records or self.batch_max_records, self.batch_max_records)
        self._pending = []
        deadline = time.monotonic() + self.batch_max_wait
        while len(self._pending) < limit and not self.shutdown.is_set():
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            polled = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=limit - len(self._pending)
            )
            for records in polled.values():
                self._pending.extend(records)
            if time.monotonic() >= deadline:
                break
        batch, self._pending = self._pending, []
        return batch

    def batch_store(
        self, messages: Sequence[TransactionMessage], letters: Sequence[DeadLetter]
    ) -> RecordedBatch:
        """Store dead letters, then score and record the messages (one attempt)."""
        if letters:
            with transaction.atomic():
                dead_letters_store(letters)
        return transaction_batch_score_record(
            messages=messages,
            store=self.store,
            config=self.config_provider.current(),
            source="stream",
        )

    def batch_store_retrying(
        self, messages: Sequence[TransactionMessage], letters: Sequence[DeadLetter]
    ) -> tuple[RecordedBatch, list[DeadLetter]]:
        """Store a batch, retrying database errors with exponential backoff; return
        what was recorded and the dead letters of the records the database refused.

        Offsets are not committed while this retries, so giving up loses nothing:
        the batch is redelivered to whoever consumes the partition next. A refusal
        (REFUSED: a value a column cannot hold, a constraint the validation
        missed) is no outage: retried, it would stop the stream on that batch for
        ever. The batch is stored in halves instead (`refusals_isolated`, each
        half through `batch_store`), and a record refused alone becomes a dead
        letter while the rest is scored. The decoding's dead letters go with the
        first part. The refused records' dead letters are stored once the whole
        batch is through: at STREAM_DB_REFUSED_IN_A_ROW refusals in a row the
        database is at fault, not the records (RefusalStreak), and the stream
        stops loudly with none of the batch's refusals stored as dead letters
        (its undecodable records' may be stored already: kept once when the
        batch comes again). Dead letters
        the database refuses too are a fault of ours, not of the input: retried,
        then the stream stops loudly.
        """

        def attempt(start: int, stop: int) -> tuple[RecordedBatch, list[DeadLetter]]:
            part, first = messages[start:stop], letters if start == 0 else []
            recorded = self._retrying(
                lambda: self.batch_store(part, first), refused=REFUSED
            )
            return recorded, []

        def refused(start: int, stop: int, refusal: Exception):
            dead = [
                dead_letter_build(
                    message.record,
                    f"database refused the record: {refusal}",
                    message.received_at,
                )
                for message in messages[start:stop]
            ]
            for message in messages[start:stop]:
                logger.warning(
                    "the database refused transaction %r, a dead letter now: %s",
                    message.transaction_id,
                    refusal,
                )
            return RecordedBatch(created=[], duplicates=[], states=[]), dead

        def combine(first, second):
            (one, one_dead), (two, two_dead) = first, second
            recorded = RecordedBatch(
                created=[*one.created, *two.created],
                duplicates=[*one.duplicates, *two.duplicates],
                states=[*one.states, *two.states],
                rescored=one.rescored or two.rescored,
            )
            return recorded, [*one_dead, *two_dead]

        recorded, dead = refusals_isolated(
            len(messages), attempt, refused, combine, self.refusal_streak
        )
        if dead:
            # With the decoding's, in case the first part was refused (a replayed
            # dead letter is kept once).
            def store() -> None:
                with transaction.atomic():
                    dead_letters_store([*letters, *dead])

            self._retrying(store)
        return recorded, dead

    def _retrying(
        self,
        attempt_once: Callable[[], _T],
        refused: tuple[type[Exception], ...] = (),
    ) -> _T:
        """Run a database step, retrying its errors with exponential backoff (see
        batch_store_retrying); reading the rules for a batch is one such step.
        Errors of the `refused` classes are raised at once (database_retrying)."""

        def failed() -> None:
            self.report.db_retries += 1
            # The cache may hold states of the rolled-back transaction's
            # neighbours; the database is the truth again.
            self.store.cache_clear()

        return database_retrying(
            attempt_once,
            limit=self.retry_limit,
            backoff_seconds=self.retry_backoff_seconds,
            shutdown=self.shutdown,
            on_error=failed,
            refused=refused,
        )

    def id_conflicts_store(
        self, messages: Sequence[TransactionMessage], recorded: RecordedBatch
    ) -> list[DeadLetter]:
        """Dead-letter records that reuse a stored id for another payment.

        Replays of a stored payment are skipped silently (at-least-once delivery
        makes them); a different payment under a stored id would otherwise be
        dropped unscored. Stored before the offsets are committed, and once only
        (`dead_letters_store`), so a crash in between loses nothing.
        """
        duplicates = set(recorded.duplicates)
        created = {row["transaction_id"] for row in recorded.created}
        candidates: list[TransactionMessage] = []
        for message in messages:
            if message.transaction_id in created:
                # The batch's first copy was stored; any repeat is a duplicate.
                created.discard(message.transaction_id)
            elif message.transaction_id in duplicates:
                candidates.append(message)
        letters = [
            dead_letter_build(message.record, conflict, message.received_at)
            for message, conflict in zip(
                candidates, transaction_id_conflicts(candidates), strict=True
            )
            if conflict
        ]
        if letters:
            with transaction.atomic():
                dead_letters_store(letters)
            logger.warning("%d records reuse the id of another payment", len(letters))
        return letters

    def dead_letters_forward(self, letters: Sequence[DeadLetter]) -> None:
        """Send dead letters to the dead-letter topic, when one is configured."""
        if not (letters and self.dead_letter_producer and self.dead_letter_topic):
            return
        try:
            for letter in letters:
                self.dead_letter_producer.send(
                    self.dead_letter_topic,
                    value=bytes(letter.raw_value),
                    headers=[
                        ("error", letter.error.encode()[:4096]),
                        (
                            "source",
                            f"{letter.topic}:{letter.partition}:{letter.offset}".encode(),
                        ),
                    ],
                )
            self.dead_letter_producer.flush(timeout=10)
        except Exception:
            # The table already holds them; the topic is a convenience copy, and
            # no failure of it (a broker error, a topic gone) may stop scoring.
            logger.exception("could not forward %d dead letters", len(letters))

    def offsets_commit(self, records: Sequence) -> bool:
        """Commit the offsets after these records; return False if the group moved on.

        A failed commit (CommitFailedError after a rebalance, a broker outage) is
        harmless: the records come back and are skipped as already stored.
        """
        offsets = offsets_next(records)
        if not offsets:
            return True
        try:
            self.consumer.commit(offsets=offsets)
        except KafkaError as exc:
            logger.warning("offset commit failed (records will be replayed): %s", exc)
            return False
        return True

    def batch_process(self, records: Sequence) -> RecordedBatch:
        """Decode, score, store and commit one micro-batch; push its verdicts."""
        currencies = self._retrying(lambda: self.config_provider.current().currencies)
        messages, letters = records_decode(records, currencies=currencies)
        recorded, refused = self.batch_store_retrying(messages, letters)
        letters = [*letters, *refused]
        conflicts = 0
        if recorded.duplicates:
            # A database step like storing: its errors are retried too.
            conflicting = self._retrying(
                lambda: self.id_conflicts_store(messages, recorded)
            )
            conflicts = len(conflicting)
            letters = [*letters, *conflicting]
        self.dead_letters_forward(letters)
        self.offsets_commit(records)
        if self.publisher is not None:
            self.publisher.batches_add(recorded.created)
        report = self.report
        report.records += len(records)
        report.created += len(recorded.created)
        # A record reusing a stored id for another payment is a dead letter, not
        # "already stored": each record is counted once (scored + already stored
        # + dead letters = records).
        report.duplicates += len(recorded.duplicates) - conflicts
        report.dead_letters += len(letters)
        report.batches += 1
        report.rescored += recorded.rescored
        self._last_activity = time.monotonic()
        return recorded

    # --- the loop ---------------------------------------------------------------

    def lag(self) -> int | None:
        """Return records between the positions and the partition ends, if known.

        The ends are the high-water marks of the latest fetch responses, so this
        costs no extra request once every partition is being fetched; the ends
        of those no fetch has answered yet are asked for (summing only the
        known ones read 2,932 records where 19,500 were left). None when the
        broker does not answer, or nothing is assigned.
        """
        assignment = self.consumer.assignment()
        if not assignment:
            return None
        ends = {tp: self.consumer.highwater(tp) for tp in assignment}
        unknown = [tp for tp, end in ends.items() if end is None]
        if unknown:
            try:
                ends.update(self.consumer.end_offsets(unknown))
            except KafkaError as exc:
                logger.debug("could not read the partitions' ends: %s", exc)
                return None
        return sum(max(end - self.consumer.position(tp), 0) for tp, end in ends.items())

    def progress_log(self) -> None:
        """Log what was done since the last progress line (every progress_interval)."""
        now = time.monotonic()
        seconds = now - self._progress_at
        if seconds < self.progress_interval:
            return
        report, seen = self.report, self._progress_seen
        records = report.records - seen.records
        if records:
            lag = self.lag()
            logger.info(
                "progress: %s records in %.1f s (%s rec/s): %s %s, %s %s, "
                "%s dead letters; lag %s",
                f"{records:,}",
                seconds,
                f"{records / seconds:,.0f}" if seconds > 0 else "-",
                f"{report.created - seen.created:,}",
                self.created_word,
                f"{report.duplicates - seen.duplicates:,}",
                self.duplicate_word,
                f"{report.dead_letters - seen.dead_letters:,}",
                "unknown" if lag is None else f"{lag:,} records",
            )
        self._progress_at = now
        self._progress_seen = dataclasses.replace(report)

    def caught_up(self) -> bool:
        """Return True when every assigned partition is consumed to its end."""
        assignment = self.consumer.assignment()
        if not assignment:
            return True
        try:
            ends = self.consumer.end_offsets(list(assignment))
        except KafkaError as exc:
            # A broker away for a moment: not caught up as far as we know.
            logger.warning("could not read the partitions' ends: %s", exc)
            return False
        return all(self.consumer.position(tp) >= ends[tp] for tp in assignment)

    def idle_expired(self, stop_when_idle: float | None) -> bool:
        """Return True when assigned, quiet for `stop_when_idle` s and caught up."""
        if stop_when_idle is None or not self.assigned_once:
            return False
        if time.monotonic() - self._last_activity < stop_when_idle:
            return False
        if self.caught_up():
            return True
        self._last_activity = time.monotonic()
        return False

    def unassigned_warn(self) -> None:
        """Log a warning every UNASSIGNED_WARN_SECONDS while this member holds
        no partition: it scores nothing, and says so. Other members may hold
        them all (more members than partitions), or the group's rebalance may
        not end: the embedded broker (Tansu) can keep a group waiting for good
        after a member stopped in the middle of joining it (seen with plain
        kafka-python too); restarting the broker, or another --group (which
        starts from the topic's beginning), gets the stream going again."""
        now = time.monotonic()
        if now - self._unassigned_since < UNASSIGNED_WARN_SECONDS:
            return
        self._unassigned_since = now
        if self.consumer.assignment():
            return
        logger.warning(
            "no partition of %s assigned to this member of group %r for %.0f s: "
            "it scores nothing. Other members may hold them all, or the group's "
            "rebalance has not ended (a member stopped while joining can keep "
            "the embedded broker's group waiting; restart the broker, or use "
            "another --group)",
            self.topic,
            self.consumer.config.get("group_id"),
            UNASSIGNED_WARN_SECONDS,
        )

    def connections_check(self) -> None:
        """Between batches, drop expired or broken connections (at most every 1 s)."""
        now = time.monotonic()
        if now - self._connections_checked >= CONNECTION_CHECK_SECONDS:
            close_old_connections()
            self._connections_checked = now

    def run(
        self, *, stop_when_idle: float | None = None, max_messages: int | None = None
    ) -> StreamReport:
        """Consume until shutdown, idle or max_messages; then leave the group."""
        self.subscribe()
        checkpointer = None
        database = str(connection.settings_dict["NAME"])
        if connection.vendor == "sqlite" and os.path.isfile(database):
            checkpointer = SqliteCheckpointer(database).start()
        try:
            while not self.shutdown.is_set():
                remaining = None
                if max_messages is not None:
                    remaining = max_messages - self.report.records
                    if remaining <= 0:
                        break
                self.connections_check()
                records = self.batch_poll(max_records=remaining)
                if records:
                    try:
                        self.batch_process(records)
                    except BatchAbandoned:
                        logger.info("shutdown while retrying; batch left uncommitted")
                        break
                    self.progress_log()
                else:
                    idle = stop_when_idle
                    if self.drain.is_set():
                        idle = min(idle or DRAIN_IDLE_SECONDS, DRAIN_IDLE_SECONDS)
                    if self.idle_expired(idle):
                        logger.info("caught up and idle for %s s: stopping", idle)
                        break
                    self.unassigned_warn()
        finally:
            if checkpointer is not None:
                checkpointer.stop()
            self.close()
        return self.report

    def close(self) -> None:
        """Stop pushing, leave the group and close the clients."""
        if self.publisher is not None:
            self.publisher.stop()
        # Offsets were committed batch by batch; closing leaves the group at once
        # so the partitions move to the other members without a session timeout.
        self.consumer.close(autocommit=False)
        if self.dead_letter_producer is not None:
            self.dead_letter_producer.close(timeout=5)


def _partitions_text(partitions) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}]"
        for tp in sorted(partitions, key=lambda tp: (tp.topic, tp.partition))
    )
