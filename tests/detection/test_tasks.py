"""Celery retrains the model: a real worker on Redis runs the task on our database."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from detection.models import ModelVersion
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import transaction_batch_score_record
from detection.simulator import simulate_transactions
from tests.db import subprocess_database_url
from transactions.messages import transaction_message_parse

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def celery_worker(redis_url, tmp_path, transactional_db):
    """Start a real worker (solo pool) on Redis and the test database, taking
    tasks from a queue of this test's own (so no other worker on this Redis
    takes them); yield the queue's name. Stopped after the test with a warm
    shutdown (SIGTERM), which must end it cleanly."""
    queue = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "fraudsite", "worker",
                "--pool", "solo", "--queues", queue, "--loglevel", "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield queue
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    # SIGTERM is Celery's warm shutdown: the worker exits cleanly.
    assert worker.returncode == 0, log_path.read_text()[-3000:]


@pytest.mark.django_db(transaction=True)
def test_worker_retrains_and_activates_a_model(redis_url, celery_worker):
    """Given stored history, the retrain task run by a worker activates a model."""
    messages = [
        transaction_message_parse(record)
        for record in simulate_transactions(users=40, days=10, seed=8)
    ]
    transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    from celery import Celery

    client = Celery("fraudsite", broker=redis_url, backend=redis_url)
    result = client.send_task("detection.tasks.model_retrain_task", queue=celery_worker)
    decision = result.get(timeout=120)
    version = decision["version"]
    assert decision["activated"] is True and decision["reason"]
    assert ModelVersion.objects.get(is_active=True).version == version
    assert ModelVersion.objects.get(version=version).sample_count == len(messages)
