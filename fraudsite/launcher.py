"""`make run`: start the whole pipeline on one machine with embedded defaults.

Resolves Redis (REDIS_URL if it answers, else a local redis-server) and Kafka
(KAFKA_BROKER, else the embedded Tansu broker), migrates SQLite, creates an admin
login with a generated password, loads a week of simulated history and trains a
model on first run, then runs the web server (`manage.py runserver`, ASGI via
daphne), the stream consumer, the simulator producer and Celery (worker + beat,
and a worker of its own for backtest jobs)
until Ctrl-C, SIGTERM or SIGHUP, when it stops every process it started.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import environ

from detection.kafka import group_lag, topic_ensure
from fraudsite.embedded import kafka_broker_resolve, redis_resolve
from fraudsite.processes import parent_death_signal

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The simulated population: the history and the live stream are the same cards.
SIMULATOR_SEED = "7"
logger = logging.getLogger("fraudsite.launcher")


def _manage(*args: str, env: dict, capture: bool = False) -> str:
    """Run a management command to completion; return its stdout if captured."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def _model_active(env: dict) -> bool:
    """Return whether a model is active (else the first run's bootstrap trains one)."""
    probe = _manage(
        "shell",
        "--verbosity",
        "0",
        "-c",
        "from detection.models import ModelVersion;"
        "print(ModelVersion.objects.filter(is_active=True).exists())",
        env=env,
        capture=True,
    )
    # The last line: Django's shell may print a line of its own first.
    return probe.strip().splitlines()[-1] == "True"


# What `make run` needs whatever a local `.env` says (an exported variable with
# a value still wins): development mode, and the simulator's settings.
LAUNCH_DEFAULTS = {
    "DEBUG": "1",
    "PYTHONUNBUFFERED": "1",
    # The simulator's clock runs ahead of the wall clock (a simulated week in
    # minutes), which the production default (1 day) would refuse.
    "TRANSACTION_MAX_FUTURE_SECONDS": "off",
    # For the same reason, simulated payments are never weeks old by the wall
    # clock; their chargebacks come SIMULATOR_CHARGEBACK_DELAY after them. The
    # classifier counts unlabelled ones as legitimate at once (a few frauds
    # whose chargeback is under way are read as legitimate until the next
    # retrain).
    "MODEL_LABEL_MATURITY_SECONDS": "0",
}


# What another shell needs to act on a running `make run` (manage.py commands
# beside its pipeline: a second consumer, a backfill, a redrive).
SHELL_SETTINGS = (
    "DEBUG",
    "KAFKA_BROKER",
    "REDIS_URL",
    "TRANSACTION_MAX_FUTURE_SECONDS",
    "MODEL_LABEL_MATURITY_SECONDS",
)


def shell_exports(env: Mapping[str, str]) -> str:
    """Return the `export` line that gives another shell the settings `make run`
    gave its processes (`env`): without them a consumer started there would
    dead-letter the simulator's payments, dated ahead of the wall clock."""
    return "export " + " ".join(
        f"{name}={shlex.quote(env[name])}" for name in SHELL_SETTINGS if env.get(name)
    )


def launch_environment(
    process_env: Mapping[str, str], env_file: Path
) -> dict[str, str]:
    """Return the environment `make run` reads and hands its processes.

    The process's own variables, then a local `.env` for the ones it does not
    have, as the settings read it (django-environ, existing keys kept); then
    LAUNCH_DEFAULTS over the file (an old `.env` with DEBUG=0 or the
    production limits would stop the simulator's pipeline) unless exported
    with a value. An empty value means unset: the launcher reads it as its
    default (`_setting`), and its processes' settings as theirs.
    """

    class _FileEnv(environ.Env):
        ENVIRON: dict[str, str] = {}

    if env_file.is_file():
        _FileEnv.read_env(env_file, overwrite=False)
    env = {**_FileEnv.ENVIRON, **process_env}
    for name, value in LAUNCH_DEFAULTS.items():
        if not process_env.get(name):
            env[name] = value
    return env


def _setting(env: Mapping[str, str], name: str, default: str) -> str:
    """Return a variable of the launch environment, empty meaning `default`."""
    return env.get(name) or default


def _history_bootstrap(env: dict, *, model_active: bool) -> None:
    """Load simulated history and train a model when no model exists yet."""
    if model_active:
        return
    history = Path(
        _setting(env, "BOOTSTRAP_HISTORY_FILE", str(ROOT / "var" / "history.jsonl"))
    )
    users = _setting(env, "BOOTSTRAP_HISTORY_USERS", "500")
    print("First run: loading 7 days of simulated history and training a model ...")
    # The week before now, of the cards the simulator then streams (same seed
    # and count: SIMULATOR_SEED, BOOTSTRAP_HISTORY_USERS), so live cards arrive
    # with their history, as they would in production.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
    _manage(
        "simulate", "--users", users, "--days", "7", "--seed", SIMULATOR_SEED,
        "--start", start.isoformat(), "--output", str(history), env=env,
    )  # fmt: skip
    # Its frauds come with their chargebacks (a week old, they would have come
    # in), so the first model's classifier has labels to learn from.
    _manage("ingest_file", str(history), "--chargebacks", env=env)
    try:
        _manage("retrain_model", env=env)
    except subprocess.CalledProcessError:
        # Too little history (a small BOOTSTRAP_HISTORY_USERS): run on rules, and
        # let the scheduled retrain train once the stream has stored enough.
        logger.warning("no model trained yet: scoring by rules alone until a retrain")


def port_taken(port: int) -> bool:
    """Return True if something already listens on 127.0.0.1:`port`.

    Checked before anything starts: the login banner is printed once the port
    answers, and an earlier run's server answering there would make it lie.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _web_wait(url: str, web: subprocess.Popen, timeout: float = 180.0) -> bool:
    """Return True once `url` answers, False if the server exits or time runs out.

    The login banner is printed only after this, so that the address it shows
    answers when the user opens it (the first request imports the whole app).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and web.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.5)
    return False


def _interrupt(signum, frame) -> None:
    """Turn SIGTERM/SIGHUP (`kill`, a closed terminal) into Ctrl-C's clean stop."""
    raise KeyboardInterrupt


def _stop(processes: list[subprocess.Popen], *, timeout: float) -> None:
    """SIGTERM the processes' groups; SIGKILL those still running after `timeout`."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _drain(
    broker: str, group: str, topic: str, consumer: subprocess.Popen, timeout=30.0
) -> None:
    """Let the consumer handle everything left on the topic and exit by itself.

    SIGUSR1 tells it to stop once its polls bring nothing (the embedded broker
    keeps its log in memory: what is not consumed now is gone). The broker's own
    count of what is left is only logged: Tansu reports a partition's end as
    one past the start of its last record batch, so it can read 0 too early.
    """
    lag = group_lag(broker, group, topic)
    if lag:
        logger.info(
            "consuming the records left on %s (about %d) before stopping", topic, lag
        )
    if consumer.poll() is not None:
        return
    consumer.send_signal(signal.SIGUSR1)
    try:
        consumer.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning(
            "the consumer did not finish the topic in %.0f s; stopping it "
            "(about %s records left)",
            timeout,
            group_lag(broker, group, topic),
        )


def main() -> int:
    """Start everything, print the login, and wait for Ctrl-C (or SIGTERM/SIGHUP)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # kafka-python logs every connection at INFO; keep the console readable.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python
    # then installs no handler of its own (`kill -INT` did nothing).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    env = launch_environment(os.environ, ROOT / ".env")
    processes: list[subprocess.Popen] = []
    commands: dict[str, list[str]] = {}
    redis_server = kafka = None
    broker = topic = None
    port = _setting(env, "PORT", "8000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        logger.error("PORT must be a TCP port number: %r", port)
        return 2
    if port_taken(int(port)):
        logger.error(
            "port %s is in use (another make run? stop it, or choose PORT=...)", port
        )
        return 1
    try:
        redis_url, redis_server = redis_resolve(env.get("REDIS_URL") or None)
        broker, kafka = kafka_broker_resolve(env.get("KAFKA_BROKER") or None)
        env["REDIS_URL"], env["KAFKA_BROKER"] = redis_url, broker
        topic = _setting(env, "KAFKA_TRANSACTIONS_TOPIC", "transactions")
        partitions = int(_setting(env, "KAFKA_TOPIC_PARTITIONS", "6"))
        topic_ensure(broker, topic, partitions)
        topic_ensure(
            broker, _setting(env, "KAFKA_CHARGEBACKS_TOPIC", "chargebacks"), partitions
        )
        _manage("migrate", "--no-input", env=env)
        login = _manage("bootstrap_admin", env=env, capture=True)
        _history_bootstrap(env, model_active=_model_active(env))
        chargeback_delay = _setting(env, "SIMULATOR_CHARGEBACK_DELAY", "60")
        backtest_queue = _setting(env, "CELERY_BACKTEST_QUEUE", "backtests")
        commands = {
            "web": [
                PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"
            ],
            "consumer": [PYTHON, "manage.py", "consume_transactions"],
            "chargebacks": [PYTHON, "manage.py", "consume_chargebacks"],
            "producer": [
                PYTHON, "manage.py", "produce_transactions",
                "--rate", _setting(env, "SIMULATOR_RATE", "20"),
                "--seed", SIMULATOR_SEED,
                "--users", _setting(env, "BOOTSTRAP_HISTORY_USERS", "500"),
                "--chargebacks-after", chargeback_delay,
                # Its clock runs ahead of the wall clock: a second run starts
                # after the first one's payments, so none arrives "late".
                "--start", "after-stored",
            ],
            "celery": [
                PYTHON, "-m", "celery", "-A", "fraudsite", "worker", "--beat",
                # WARNING: at INFO, beat and the worker log three lines every
                # 5 s (the webhook sender), scrolling the login banner away.
                "--concurrency", "2", "--loglevel", "WARNING",
                # Backtest jobs have their own worker, below.
                "--exclude-queues", backtest_queue,
            ],
            # One backtest job at a time, never in the way of webhooks or retrains.
            "backtests": [
                PYTHON, "-m", "celery", "-A", "fraudsite", "worker",
                "--queues", backtest_queue, "--concurrency", "1",
                "--hostname", "backtests@%h", "--loglevel", "WARNING",
            ],
        }  # fmt: skip
        for name, command in commands.items():
            logger.info("starting %s: %s", name, " ".join(command[1:]))
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,
                    # Gone with the launcher even when it is SIGKILLed: no
                    # orphans writing to the database or holding the port.
                    preexec_fn=parent_death_signal(),
                )
            )
        password = login.split("password=")[-1].strip()
        if password == "(yours)":
            password = (
                "the password you set (new one: manage.py bootstrap_admin --reset)"
            )
        logger.info("waiting for the web server to answer ...")
        if not _web_wait(f"http://127.0.0.1:{port}/api/", processes[0]):
            logger.warning("the web server did not answer on port %s yet", port)
        print(
            "\n" + "=" * 64 + "\n"
            f"  Dashboard  http://127.0.0.1:{port}/\n"
            f"  Admin      http://127.0.0.1:{port}/admin/\n"
            f"  API        http://127.0.0.1:{port}/api/  (docs: /api/docs/)\n"
            f"  Metrics    http://127.0.0.1:{port}/metrics  (signed in as staff)\n"
            f"  Login      admin / {password}\n"
            f"  Kafka {broker}   Redis {redis_url}\n"
            "  Another shell (manage.py commands on this pipeline):\n"
            f"    {shell_exports(env)}\n"
            "  Ctrl-C stops everything.\n" + "=" * 64 + "\n",
            flush=True,
        )
        while True:
            for process, name in zip(processes, commands, strict=True):
                if process.poll() is not None:
                    logger.error(
                        "%s exited with %s; stopping", name, process.returncode
                    )
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...")
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        named = dict(zip(commands, processes, strict=False)) if processes else {}
        # Nothing produced may be left unscored: the producer stops first, then
        # the consumer scores what is left on the topic, then everything stops
        # (the embedded broker keeps its log in memory).
        producer = named.get("producer")
        if producer is not None:
            _stop([producer], timeout=10)
        consumer = named.get("consumer")
        if consumer is not None and consumer.poll() is None and broker:
            group = _setting(env, "KAFKA_CONSUMER_GROUP", "fraud-scorer")
            _drain(broker, group, topic, consumer)
        # Then the chargebacks the simulator sent: after the payments they
        # label, which are all stored by now.
        chargebacks = named.get("chargebacks")
        if chargebacks is not None and chargebacks.poll() is None and broker:
            _drain(
                broker,
                _setting(env, "KAFKA_CHARGEBACKS_GROUP", "fraud-labels"),
                _setting(env, "KAFKA_CHARGEBACKS_TOPIC", "chargebacks"),
                chargebacks,
            )
        _stop(processes, timeout=15)
        if kafka is not None:
            kafka.stop()
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())
