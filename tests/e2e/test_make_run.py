"""`make run`'s launcher brings the whole pipeline up, prints a login, and stops it."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin

import psutil
import pytest
import requests

from fraudsite.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def _launch(env: dict, log_path: Path):
    """Start `make run`'s launcher in its own session; return it and its log."""
    log = log_path.open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "fraudsite.launcher"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


def _children(process: subprocess.Popen) -> list[psutil.Process]:
    """Return every process the launcher started (each in its own session, so
    not in its process group), and theirs."""
    return psutil.Process(process.pid).children(recursive=True)


def _assert_all_stopped(children: list[psutil.Process]) -> None:
    """Fail if any of these processes outlives the launcher by 30 s; kill those."""
    _gone, alive = psutil.wait_procs(children, timeout=30)
    for survivor in alive:
        survivor.kill()
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


def _terminate(process: subprocess.Popen) -> int:
    """SIGTERM the launcher alone (as `kill` does) and return its exit code; if
    it hangs, kill its whole session, then fail."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher hung: fail, clean
        process.wait(timeout=10)
        raise


@pytest.mark.kafka
def test_launcher_serves_admin_and_api_then_stops_everything(tmp_path, redis_url):
    """Given a fresh database, the launcher prints an admin login that works.

    The web app answers on /api/ and /admin/, the stream scores simulated
    transactions, their simulated chargebacks label them, and SIGTERM to the
    launcher alone (`kill`, a closed terminal) stops every process it started, as
    Ctrl-C does.
    """
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "BOOTSTRAP_HISTORY_USERS": "60",
        "BOOTSTRAP_HISTORY_FILE": str(tmp_path / "history.jsonl"),
        "SIMULATOR_RATE": "50",
        "SIMULATOR_CHARGEBACK_DELAY": "2",
    }
    env.pop("KAFKA_BROKER", None)
    process, log = _launch(env, tmp_path / "launcher.log")
    children: list[psutil.Process] = []
    try:
        password = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and password is None:
            assert process.poll() is None, Path(log.name).read_text()[-3000:]
            found = re.search(r"Login\s+admin / (\S+)", Path(log.name).read_text())
            password = found.group(1) if found else None
            time.sleep(0.5)
        assert password, "no login printed"
        assert password not in ("admin", "password") and len(password) >= 12
        # What another shell exports to act on this pipeline.
        exports = re.search(r"^ +export (.+)$", Path(log.name).read_text(), re.M)
        assert exports, "no export line printed"
        assert "TRANSACTION_MAX_FUTURE_SECONDS=off" in exports.group(1)
        assert re.search(r"KAFKA_BROKER=127\.0\.0\.1:\d+", exports.group(1))
        children = _children(process)
        commands = " ".join(" ".join(child.cmdline()) for child in children)
        for started in (
            "runserver",
            "consume_transactions",
            "consume_chargebacks",
            "produce_transactions",
            "celery",
            "tansu",
        ):
            assert started in commands, (started, commands)

        base = f"http://127.0.0.1:{port}"
        session = requests.Session()
        # The banner is printed once the web server answers: no retrying here.
        health = session.get(f"{base}/api/", timeout=30)
        assert health.json()["scoring"] == "rules + model"

        login_page = session.get(f"{base}/admin/login/")
        token = session.cookies["csrftoken"]
        assert login_page.status_code == 200
        done = session.post(
            f"{base}/admin/login/?next=/admin/",
            data={
                "username": "admin",
                "password": password,
                "csrfmiddlewaretoken": token,
            },
            headers={"Referer": f"{base}/admin/login/"},
        )
        assert done.status_code == 200 and "Site administration" in done.text

        streamed = 0
        while time.monotonic() < deadline and streamed == 0:
            body = session.get(f"{base}/api/transactions?n=5").json()
            streamed = sum(
                1 for item in body["items"] if item["transaction_id"].startswith("st-")
            )
            time.sleep(0.5)
        assert streamed > 0, "no streamed transaction was scored"

        # A backtest job of the week's history is run by the backtest worker
        # (its own queue: the main worker is started without it).
        now = datetime.now(UTC)
        queued = session.post(
            f"{base}/api/backtest/jobs",
            json={
                "since": (now - timedelta(days=8)).isoformat(),
                "train_until": (now - timedelta(days=2)).isoformat(),
                "until": now.isoformat(),
            },
            headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": base},
            timeout=30,
        )
        assert queued.status_code == 202, queued.text
        deadline = time.monotonic() + 120
        job = queued.json()
        while time.monotonic() < deadline and job["status"] in ("queued", "running"):
            time.sleep(0.5)
            job = session.get(
                urljoin(base, queued.headers["Location"]), timeout=30
            ).json()
        assert job["status"] == "done", job
        assert job["rows_done"] == job["rows_total"] > 0
    finally:
        code = _terminate(process)
        _assert_all_stopped(children)
    assert code == 0
    text = Path(log.name).read_text()
    assert re.search(r"kafka stopped \(pid \d+\)", text), text[-3000:]
    # Nothing the simulator sent is lost on the way down: the producer stops
    # first and the consumer scores what is left before the broker goes.
    sent = int(re.search(r"Sent ([\d,]+) messages", text).group(1).replace(",", ""))
    with sqlite3.connect(tmp_path / "run.sqlite3") as db:
        (stored,) = db.execute(
            "SELECT COUNT(*) FROM transactions_transaction WHERE ingest_source = ?",
            ["stream"],
        ).fetchone()
    assert sent > 0 and stored == sent, (sent, stored)
    # The simulated chargebacks all arrive too: each labels its payment, or (had
    # it overtaken the payment) waits as a dead letter for a redrive.
    found = re.search(r"Sent ([\d,]+) chargebacks", text)
    assert found, text[-3000:]
    chargebacks = int(found.group(1).replace(",", ""))
    with sqlite3.connect(tmp_path / "run.sqlite3") as db:
        (labelled,) = db.execute(
            "SELECT COUNT(*) FROM transactions_label WHERE source = 'chargeback' "
            "AND reference NOT LIKE 'file|%'"
        ).fetchone()
        # The bootstrap history's frauds came with their chargebacks.
        (history_labels,) = db.execute(
            "SELECT COUNT(*) FROM transactions_label WHERE reference LIKE 'file|%'"
        ).fetchone()
        (waiting,) = db.execute(
            "SELECT COUNT(*) FROM detection_deadletter WHERE error LIKE ?",
            ["No stored transaction%"],
        ).fetchone()
    assert labelled + waiting == chargebacks, (labelled, waiting, chargebacks)
    assert history_labels > 0

    # A second `make run` on the same database: no second bootstrap (the model
    # is there), and the simulator's clock goes on after the first run's last
    # payment, so the cards' new payments are not "late" (travel unchecked).
    again, second_log = _launch(env, tmp_path / "launcher2.log")
    second_children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 180
        streamed_before = stored
        more = 0
        while time.monotonic() < deadline and more < 50:
            assert again.poll() is None, Path(second_log.name).read_text()[-3000:]
            with sqlite3.connect(tmp_path / "run.sqlite3") as db:
                (total,) = db.execute(
                    "SELECT COUNT(*) FROM transactions_transaction "
                    "WHERE ingest_source = 'stream'"
                ).fetchone()
            more = total - streamed_before
            second_children = _children(again)
            time.sleep(0.5)
        assert more >= 50, "the second run scored nothing"
    finally:
        second_code = _terminate(again)
        _assert_all_stopped(second_children)
    assert second_code == 0
    second_text = Path(second_log.name).read_text()
    assert "First run" not in second_text
    with sqlite3.connect(tmp_path / "run.sqlite3") as db:
        (late,) = db.execute(
            "SELECT COUNT(*) FROM transactions_transaction WHERE notes LIKE ?",
            ["%travel not checked%"],
        ).fetchone()
    assert late == 0, f"{late} payments of the second run arrived 'late'"


def test_launcher_refuses_a_port_already_in_use(tmp_path):
    """Given something listening on PORT (an earlier run still serving), the
    launcher says so and exits 1 before starting anything, instead of printing
    a login for the other server."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        }
        result = subprocess.run(
            [sys.executable, "-m", "fraudsite.launcher"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stderr
    assert "Login" not in result.stdout
    assert not (tmp_path / "db.sqlite3").exists()  # nothing was started
