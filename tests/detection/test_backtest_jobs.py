"""Backtest jobs: POST /api/backtest/jobs queues a ledger backtest a Celery worker
runs, with its progress; GET reads it, and its answer is POST /api/backtest's."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from detection import backtest_jobs
from detection.backtest import backtest_run, draft_config, ledger_messages
from detection.backtest_jobs import ProgressWriter, backtest_job_run
from detection.models import BacktestJob
from detection.roles import ROLE_SCORING_CLIENT
from detection.scoring import scoring_config_from_db
from tests.detection.test_backtest_api import ledger_simulated  # noqa: F401 (a fixture)
from tests.detection.test_roles import _api
from tests.detection.test_tasks import celery_worker  # noqa: F401 (a fixture)
from tests.ledger import transaction_stored

WINDOW = {
    "since": "2026-01-01T00:00:00Z",
    "train_until": "2026-01-08T00:00:00Z",
    "until": "2026-02-01T00:00:00Z",
}
DRAFT = {
    "rules": {"amount_spike": {"enabled": False}},
    "thresholds": {"suspicious": 0.4},
}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _expected(draft: dict) -> dict:
    """The answer built from `backtest_run` over the whole ledger in memory, as
    POST /api/backtest answered before replays streamed."""
    config = scoring_config_from_db(model=None)
    messages = ledger_messages(
        since=_when(WINDOW["since"]), until=_when(WINDOW["until"])
    )
    result = backtest_run(
        messages,
        train_until=_when(WINDOW["train_until"]),
        config=config,
        draft=draft_config(draft, live=config),
        # The API's default: the live setting's.
        label_maturity_seconds=settings.MODEL_LABEL_MATURITY_SECONDS,
    )
    return {
        "replayed": len(messages),
        "trained_on": result.trained_on,
        "model_version": result.model_version,
        "classifier": result.classifier,
        "live": result.metrics,
        "draft": result.draft_metrics,
    }


@pytest.mark.django_db
def test_a_job_answers_as_the_synchronous_backtest_and_as_a_replay_in_memory(
    api_client,
    ledger_simulated,  # noqa: F811
):
    """202 with the job (queued) and its address; run, it is done with every row
    counted and the synchronous answer, which is the in-memory replay's."""
    response = api_client.post(
        "/api/backtest/jobs", {**WINDOW, "draft": DRAFT}, format="json"
    )
    assert response.status_code == 202, response.content
    queued = response.json()
    assert response["Location"] == queued["url"]
    assert queued["url"].endswith(f"/api/backtest/jobs/{queued['id']}")
    assert queued["status"] == "queued" and queued["result"] is None
    assert queued["rows_total"] == len(ledger_simulated)
    assert queued["requested_by"] == "analyst" and queued["draft"] == DRAFT

    # Payments stored (or removed) between the request and the run: the job
    # counts the window again when it starts, so rows_done ends at rows_total.
    BacktestJob.objects.filter(pk=queued["id"]).update(rows_total=7)
    assert backtest_job_run(queued["id"]) == "done"

    job = api_client.get(response["Location"]).json()
    assert job["status"] == "done" and job["error"] == "" and not job["stale"]
    assert job["rows_done"] == job["rows_total"] == len(ledger_simulated)
    assert job["started_at"] and job["finished_at"]
    synchronous = api_client.post(
        "/api/backtest", {**WINDOW, "draft": DRAFT}, format="json"
    )
    assert synchronous.status_code == 200
    assert job["result"] == synchronous.json()
    assert job["result"]["draft"]["rule_hits"] != job["result"]["live"]["rule_hits"]
    assert job["result"] == _expected(DRAFT)


@pytest.mark.django_db
def test_progress_is_written_at_most_once_a_second():
    """Rows are counted on every call, written only when a second has passed
    since the last write (and on flush)."""
    job = BacktestJob.objects.create(
        since=_when(WINDOW["since"]),
        train_until=_when(WINDOW["train_until"]),
        until=_when(WINDOW["until"]),
        rows_total=20_000,
        status="running",  # it writes while the job runs
    )
    ticks = itertools.count(step=0.25)  # each batch takes a quarter second
    progress = ProgressWriter(job.pk, clock=lambda: next(ticks))
    for _ in range(20):
        progress(1000)
    assert progress.done == 20_000
    assert progress.writes == 5  # after batches 4, 8, 12, 16 and 20
    job.refresh_from_db()
    assert job.rows_done == 20_000  # written at 5.0 s, after the 20th batch
    progress(500)
    job.refresh_from_db()
    assert job.rows_done == 20_000  # not a second since
    progress.flush()
    job.refresh_from_db()
    assert job.rows_done == 20_500


def _ledger_of_three():
    for index in range(3):
        transaction_stored(
            f"t-{index}", timestamp=datetime(2026, 1, 2 + index, tzinfo=UTC)
        )


@pytest.mark.django_db
def test_a_failed_job_records_its_error(api_client, monkeypatch):
    """Too few transactions to train on (a window POST refuses now, but the
    ledger may change before the job runs): failed, with the reason; an
    unexpected error is recorded too (with its type), then raised for the
    worker's log."""
    _ledger_of_three()
    window = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-10T00:00:00Z"}
    body = {**window, "train_until": "2026-01-03T00:00:00Z"}
    refused = api_client.post("/api/backtest/jobs", body, format="json")
    assert refused.status_code == 400, refused.content
    assert refused.json()["train_until"] == [
        "Need at least 200 transactions to train, got 1 before it."
    ]
    assert not BacktestJob.objects.exists()
    queued = BacktestJob.objects.create(
        **{key: _when(value) for key, value in body.items()}
    )
    assert backtest_job_run(queued.pk) == "failed"
    job = api_client.get(f"/api/backtest/jobs/{queued.pk}").json()
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"].startswith("Need at least") and job["finished_at"]
    assert job["rows_done"] == 1  # the one row before train_until was replayed

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(backtest_jobs, "ledger_backtest", broken)
    again = BacktestJob.objects.create(
        **{key: _when(value) for key, value in body.items()}
    )
    with pytest.raises(RuntimeError):
        backtest_job_run(again.pk)
    job = BacktestJob.objects.get(pk=again.pk)
    assert (job.status, job.error) == ("failed", "RuntimeError: disk on fire")
    # Run again (a redelivered task), a finished job is left as it is.
    assert backtest_job_run(job.pk) == "failed"


@pytest.mark.django_db
def test_the_job_cap_is_larger_and_past_it_is_a_400(api_client, settings, monkeypatch):
    """A window over API_BACKTEST_MAX_ROWS is a job; over API_BACKTEST_JOB_MAX_ROWS
    a 400 naming it, and no job is stored."""
    _ledger_of_three()
    # Three rows: let the request past the check of enough rows to train on.
    monkeypatch.setattr("detection.views.MIN_TRAINING_SAMPLES", 1)
    body = {
        "since": "2026-01-01T00:00:00Z",
        "train_until": "2026-01-03T00:00:00Z",
        "until": "2026-01-10T00:00:00Z",
    }
    settings.API_BACKTEST_MAX_ROWS = 2
    settings.API_BACKTEST_JOB_MAX_ROWS = 3
    synchronous = api_client.post("/api/backtest", body, format="json")
    assert synchronous.status_code == 400
    assert "POST /api/backtest/jobs" in synchronous.json()["detail"]
    assert api_client.post("/api/backtest/jobs", body, format="json").status_code == 202
    settings.API_BACKTEST_JOB_MAX_ROWS = 2
    too_many = api_client.post("/api/backtest/jobs", body, format="json")
    assert too_many.status_code == 400
    assert too_many.json()["detail"].startswith("3 transactions are between")
    assert "(API_BACKTEST_JOB_MAX_ROWS)" in too_many.json()["detail"]
    settings.API_BACKTEST_JOB_MAX_ROWS = 3
    one_side = api_client.post(
        "/api/backtest/jobs",
        {**body, "train_until": "2026-01-09T00:00:00Z"},
        format="json",
    )
    assert one_side.status_code == 400 and "both sides" in str(one_side.json())
    assert BacktestJob.objects.count() == 1


@pytest.mark.django_db
def test_a_scoring_client_cannot_start_or_read_jobs(django_user_model, viewer_client):
    """Jobs read the ledger: they take a role that reads, as POST /api/backtest."""
    job = BacktestJob.objects.create(
        since=_when(WINDOW["since"]),
        train_until=_when(WINDOW["train_until"]),
        until=_when(WINDOW["until"]),
    )
    gateway = django_user_model.objects.create_user(username="gateway")
    gateway.groups.add(Group.objects.get(name=ROLE_SCORING_CLIENT))
    client = _api(gateway)
    assert client.post("/api/backtest/jobs", WINDOW, format="json").status_code == 403
    assert client.get("/api/backtest/jobs").status_code == 403
    assert client.get(f"/api/backtest/jobs/{job.pk}").status_code == 403
    listed = viewer_client.get("/api/backtest/jobs")
    assert listed.status_code == 200 and listed.json()[0]["id"] == job.pk
    assert viewer_client.get(f"/api/backtest/jobs/{job.pk}").status_code == 200


@pytest.mark.django_db
def test_a_job_without_a_heartbeat_is_shown_stale(viewer_client, settings):
    """Queued or running, with no write for API_BACKTEST_JOB_STALE_SECONDS:
    stale (its worker died); done, or recently written, not."""
    settings.API_BACKTEST_JOB_STALE_SECONDS = 60
    window = {key: _when(value) for key, value in WINDOW.items()}
    old = datetime.now(UTC) - timedelta(seconds=61)
    dead = BacktestJob.objects.create(**window, status="running")
    finished = BacktestJob.objects.create(**window, status="done")
    alive = BacktestJob.objects.create(**window, status="running")
    BacktestJob.objects.filter(pk__in=[dead.pk, finished.pk]).update(updated_at=old)
    shown = {
        job["id"]: job["stale"]
        for job in viewer_client.get("/api/backtest/jobs").json()
    }
    assert shown == {dead.pk: True, finished.pk: False, alive.pk: False}
    # Newest first; a parameter is a 400, an unknown id a 404.
    assert list(shown) == [alive.pk, finished.pk, dead.pk]
    assert viewer_client.get("/api/backtest/jobs?status=done").status_code == 400
    assert viewer_client.get("/api/backtest/jobs/999999").status_code == 404


@pytest.mark.django_db
def test_a_job_queued_behind_a_running_one_is_not_stale(viewer_client, settings):
    """The backtest worker runs one job at a time: a job queued for long behind
    one whose worker still writes is waiting, not stale; once no running job
    writes either, no worker is at work on the queue, and it is."""
    settings.API_BACKTEST_JOB_STALE_SECONDS = 60
    window = {key: _when(value) for key, value in WINDOW.items()}
    old = datetime.now(UTC) - timedelta(seconds=61)
    running = BacktestJob.objects.create(**window, status="running")
    waiting = BacktestJob.objects.create(**window, status="queued")
    BacktestJob.objects.filter(pk=waiting.pk).update(updated_at=old)

    def stale() -> dict:
        listed = viewer_client.get("/api/backtest/jobs").json()
        return {job["id"]: job["stale"] for job in listed}

    assert stale() == {running.pk: False, waiting.pk: False}
    BacktestJob.objects.filter(pk=running.pk).update(updated_at=old)
    assert stale() == {running.pk: True, waiting.pk: True}


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_job_to_the_synchronous_answer(
    api_client,
    ledger_simulated,  # noqa: F811
    celery_worker,  # noqa: F811
    settings,
):
    """End to end: POST queues the job on Redis, a real worker runs it against
    the test database, GET shows it done with POST /api/backtest's answer."""
    settings.CELERY_BACKTEST_QUEUE = celery_worker
    response = api_client.post(
        "/api/backtest/jobs", {**WINDOW, "draft": DRAFT}, format="json"
    )
    assert response.status_code == 202, response.content
    deadline = time.monotonic() + 120
    while True:
        job = api_client.get(response["Location"]).json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert job["status"] == "done", job
    assert job["rows_done"] == job["rows_total"] == len(ledger_simulated)
    synchronous = api_client.post(
        "/api/backtest", {**WINDOW, "draft": DRAFT}, format="json"
    )
    assert job["result"] == synchronous.json()
    assert BacktestJob.objects.get().started_at <= BacktestJob.objects.get().finished_at


@pytest.mark.django_db
def test_admin_shows_jobs_read_only_with_progress_and_staleness(client, staff_user):
    """The jobs' list shows each one's progress and whether it is stale; a job
    is read-only there (the worker alone writes it)."""
    window = {key: _when(value) for key, value in WINDOW.items()}
    job = BacktestJob.objects.create(
        **window, status="running", rows_done=1000, rows_total=2000
    )
    BacktestJob.objects.filter(pk=job.pk).update(
        updated_at=datetime.now(UTC) - timedelta(days=1)
    )
    client.force_login(staff_user)
    page = client.get("/admin/detection/backtestjob/").content.decode()
    assert "1,000 / 2,000 (50%)" in page
    assert 'alt="True"' in page  # stale
    change = client.get(f"/admin/detection/backtestjob/{job.pk}/change/")
    assert change.status_code == 200 and b'name="_save"' not in change.content
    assert client.get("/admin/detection/backtestjob/add/").status_code == 403


@pytest.mark.django_db
def test_listing_many_queued_jobs_asks_whether_they_are_stale_once(
    viewer_client, client, staff_user, settings
):
    """Whether a queued job is stale depends on the running ones: the jobs'
    list (API and admin) asks that in its one query, not once per job."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.API_BACKTEST_JOB_STALE_SECONDS = 60
    window = {key: _when(value) for key, value in WINDOW.items()}
    old = datetime.now(UTC) - timedelta(seconds=61)
    client.force_login(staff_user)

    def queries(path: str, api) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(path).status_code == 200
        return len(captured)

    def queue(jobs: int) -> None:
        created = [BacktestJob.objects.create(**window) for _ in range(jobs)]
        BacktestJob.objects.filter(pk__in=[j.pk for j in created]).update(
            updated_at=old
        )

    queue(1)
    queries("/api/backtest/jobs", viewer_client)  # the permissions, read once
    queries("/admin/detection/backtestjob/", client)
    few = queries("/api/backtest/jobs", viewer_client)
    few_admin = queries("/admin/detection/backtestjob/", client)
    queue(29)
    assert queries("/api/backtest/jobs", viewer_client) == few
    assert queries("/admin/detection/backtestjob/", client) == few_admin
    listed = viewer_client.get("/api/backtest/jobs").json()
    assert len(listed) == 30 and all(job["stale"] for job in listed)


@pytest.mark.django_db
def test_a_job_is_cancelled_queued_or_running_by_its_requester_or_a_risk_admin(
    viewer_client, django_user_model
):
    """Queued, a cancelled job never starts; running, it stops at its next
    progress write. Another reader may not cancel it, a Risk admin may; an
    ended job is a 409."""
    from detection.roles import ROLE_RISK_ADMIN, ROLE_VIEWER

    def member(name: str, role: str):
        user = django_user_model.objects.create_user(username=name)
        user.groups.add(Group.objects.get(name=role))
        return _api(user)

    window = {key: _when(value) for key, value in WINDOW.items()}
    requester = django_user_model.objects.get(username="viewer")
    queued = BacktestJob.objects.create(**window, requested_by=requester)
    other = member("other-viewer", ROLE_VIEWER)
    assert other.post(f"/api/backtest/jobs/{queued.pk}/cancel").status_code == 403
    cancelled = viewer_client.post(f"/api/backtest/jobs/{queued.pk}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "Cancelled by viewer."
    assert backtest_job_run(queued.pk) == "cancelled"  # its task arrives: skipped
    again = viewer_client.post(f"/api/backtest/jobs/{queued.pk}/cancel")
    assert again.status_code == 409 and "cancelled already" in again.json()["detail"]

    admin_client = member("risk", ROLE_RISK_ADMIN)
    running = BacktestJob.objects.create(**window, requested_by=requester)
    replayed = []

    def replay(**kwargs):
        # The admin cancels while the rows are replayed; the next write stops it.
        kwargs["progress"](1000)
        cancel = admin_client.post(f"/api/backtest/jobs/{running.pk}/cancel")
        assert cancel.status_code == 200, cancel.content
        kwargs["progress"](1000)
        replayed.append("past the cancel")
        return {}

    ticks = iter(range(0, 1000, 5))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backtest_jobs, "ledger_backtest", replay)
        assert backtest_job_run(running.pk, clock=lambda: next(ticks)) == "cancelled"
    assert replayed == []
    job = BacktestJob.objects.get(pk=running.pk)
    assert (job.status, job.rows_done, job.error) == (
        "cancelled",
        1000,
        "Cancelled by risk.",
    )


@pytest.mark.django_db
def test_a_user_may_have_so_many_jobs_queued_or_running(
    api_client, staff_user, settings, monkeypatch
):
    """The backtest worker runs one job at a time: one user's jobs queued or
    running are capped (API_BACKTEST_JOB_ACTIVE_PER_USER); past it, 429 until
    one ends."""
    _ledger_of_three()
    monkeypatch.setattr("detection.views.MIN_TRAINING_SAMPLES", 1)
    monkeypatch.setattr("detection.views.backtest_job_enqueue", lambda job: None)
    settings.API_BACKTEST_JOB_ACTIVE_PER_USER = 2
    body = {
        "since": "2026-01-01T00:00:00Z",
        "train_until": "2026-01-03T00:00:00Z",
        "until": "2026-01-10T00:00:00Z",
    }
    codes = [
        api_client.post("/api/backtest/jobs", body, format="json").status_code
        for _ in range(3)
    ]
    assert codes == [202, 202, 429]
    refused = api_client.post("/api/backtest/jobs", body, format="json")
    assert "API_BACKTEST_JOB_ACTIVE_PER_USER" in refused.json()["detail"]
    BacktestJob.objects.filter(pk=BacktestJob.objects.first().pk).update(status="done")
    assert api_client.post("/api/backtest/jobs", body, format="json").status_code == 202
    assert BacktestJob.objects.filter(requested_by=staff_user).count() == 3
