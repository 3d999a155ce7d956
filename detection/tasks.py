"""Celery tasks of detection: thin wrappers over services."""

from celery import shared_task

from detection.services import model_retrain


@shared_task(name="detection.tasks.model_retrain_task")
def model_retrain_task(limit: int = 200_000, warmup: int | None = None) -> str:
    """Train and activate a new model on stored history; return its version."""
    return model_retrain(limit=limit, warmup=warmup)
