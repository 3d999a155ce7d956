"""Backtest jobs: a ledger backtest run by a Celery worker, with its progress.

POST /api/backtest/jobs stores a `BacktestJob` (queued) and queues
`detection.tasks.backtest_job_task`; the worker runs `backtest_job_run`, which
replays the window with `ledger_backtest` (streamed: no million messages in
memory), writes the rows done at most once every PROGRESS_SECONDS, and ends
the job done (with the answer POST /api/backtest would give) or failed (with
the error).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.utils import timezone

from detection.backtest import DraftError, draft_config, ledger_backtest
from detection.models import BacktestJob
from detection.registry import TooFewToTrain
from detection.scoring import scoring_config_from_db
from detection.serializers import BacktestResultSerializer
from transactions.models import Transaction

logger = logging.getLogger(__name__)

# Progress is written at most this often (a replay scores ~10,000 rows a
# second: a write per 1,000-row batch would be ten a second, for nothing).
PROGRESS_SECONDS = 1.0


class JobCancelled(Exception):
    """Raise when the job being run was cancelled (its row is no longer running)."""


class ProgressWriter:
    """Count the rows a job replayed; write the count (and the heartbeat,
    `updated_at`) to its row at most every `interval` seconds, and on `flush`."""

    def __init__(
        self,
        job_id: int,
        *,
        interval: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job_id
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.writes = 0
        self._written_at = clock()

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.clock() - self._written_at >= self.interval:
            self.flush()

    def flush(self, **fields) -> None:
        """Write the count, with any other `fields` of the job, while it runs.

        Raise JobCancelled when it no longer does (POST .../cancel set it
        cancelled): the replay stops at its next write, within a second.
        """
        written = BacktestJob.objects.filter(
            pk=self.job_id, status=BacktestJob.Status.RUNNING
        ).update(rows_done=self.done, updated_at=timezone.now(), **fields)
        if not written:
            raise JobCancelled(self.job_id)
        self.writes += 1
        self._written_at = self.clock()


def backtest_job_run(
    job_id: int, *, clock: Callable[[], float] = time.monotonic
) -> str:
    """Run a queued job to done or failed, and return its status.

    A job that is not queued (run already: a redelivered task, or cancelled
    while queued) is left alone; one cancelled while it runs stops at its next
    progress write and stays cancelled.
    The draft is applied to the live rules as they are when the job starts. An
    error that is the request's (too few transactions to train on, a draft
    the rules changed under) fails the job with its message; any other is
    recorded as well, then raised (the worker logs it, the task fails).
    """
    now = timezone.now()
    claimed = BacktestJob.objects.filter(
        pk=job_id, status=BacktestJob.Status.QUEUED
    ).update(status=BacktestJob.Status.RUNNING, started_at=now, updated_at=now)
    if not claimed:
        logger.warning(
            "backtest job %s: not queued (run already, cancelled?); skipped", job_id
        )
        return (
            BacktestJob.objects.filter(pk=job_id)
            .values_list("status", flat=True)
            .first()
            or "missing"
        )
    job = BacktestJob.objects.get(pk=job_id)
    # Counted again: payments may have been stored in the window since it was
    # asked for (late ones), and rows_done must end at rows_total.
    job.rows_total = Transaction.objects.filter(
        timestamp__gte=job.since, timestamp__lt=job.until
    ).count()
    BacktestJob.objects.filter(pk=job.pk).update(rows_total=job.rows_total)
    progress = ProgressWriter(job.pk, clock=clock)
    try:
        return _job_replay(job, progress)
    except JobCancelled:
        logger.info("backtest job %s cancelled after %s rows", job_id, progress.done)
        return BacktestJob.Status.CANCELLED


def _job_replay(job: BacktestJob, progress: ProgressWriter) -> str:
    job_id = job.pk
    try:
        config = scoring_config_from_db(model=None)
        draft = None if job.draft is None else draft_config(job.draft, live=config)
        result = ledger_backtest(
            since=job.since,
            until=job.until,
            train_until=job.train_until,
            config=config,
            draft=draft,
            label_maturity_seconds=job.label_maturity_days * 86400,
            progress=progress,
        )
    except JobCancelled:
        raise
    except Exception as exc:
        # The request's own: too few to train on, a draft the rules changed under.
        expected = isinstance(exc, TooFewToTrain | DraftError)
        progress.flush(
            status=BacktestJob.Status.FAILED,
            error=str(exc) if expected else f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        if expected:
            logger.warning("backtest job %s failed: %s", job_id, exc)
            return BacktestJob.Status.FAILED
        logger.exception("backtest job %s failed", job_id)
        raise
    progress.flush(
        status=BacktestJob.Status.DONE,
        result=BacktestResultSerializer(result).data,
        finished_at=timezone.now(),
    )
    logger.info(
        "backtest job %s done: %s transactions replayed", job_id, result["replayed"]
    )
    return BacktestJob.Status.DONE
