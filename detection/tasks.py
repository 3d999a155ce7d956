"""Celery tasks of detection: thin wrappers over services."""

import logging

from celery import shared_task

from detection.alerts import alert_deliveries_send
from detection.backtest_jobs import backtest_job_run
from detection.models import ModelVersion
from detection.services import model_retrain

logger = logging.getLogger(__name__)


@shared_task(name="detection.tasks.model_retrain_task")
def model_retrain_task(limit: int = 200_000, warmup: int | None = None) -> dict:
    """Train a new model on stored history; return whether it went live, and why.

    The scheduled (beat) retrain reports its decision in its result and its log,
    so that an operator sees a model held back by the activation checks.
    """
    version = model_retrain(limit=limit, warmup=warmup)
    row = ModelVersion.objects.get(version=version)
    decision = {
        "version": version,
        "activated": row.is_active,
        "reason": row.evaluation.get("reason", ""),
        "classifier": row.evaluation.get("classifier", ""),
    }
    log = logger.info if row.is_active else logger.warning
    log(
        "retrain: model %s %s: %s; classifier: %s",
        version,
        "activated" if row.is_active else "stored inactive",
        decision["reason"],
        decision["classifier"],
    )
    return decision


@shared_task(name="detection.tasks.alerts_send_task")
def alerts_send_task() -> dict:
    """Send the alert webhooks' due deliveries (beat runs this every few seconds)."""
    return alert_deliveries_send()


@shared_task(name="detection.tasks.backtest_job_task")
def backtest_job_task(job_id: int) -> str:
    """Run a queued backtest job (POST /api/backtest/jobs); return its status."""
    return backtest_job_run(job_id)
