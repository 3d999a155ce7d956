"""docker-compose.yml stays consistent with the settings and the commands.

No Docker engine runs here, so the file is checked by reading it: every service
the architecture names exists, every variable it sets is one the settings read,
and every command it runs exists in this project.
"""

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SETTINGS_TEXT = (ROOT / "fraudsite" / "settings.py").read_text()
APP_SERVICES = [
    "migrate",
    "web",
    "consumer",
    "chargebacks",
    "producer",
    "celery-worker",
    "celery-backtests",
    "celery-beat",
]


def test_services_of_the_architecture_exist():
    """Kafka (KRaft, no ZooKeeper), PostgreSQL, Redis and every app process."""
    services = COMPOSE["services"]
    assert {"kafka", "postgres", "redis", *APP_SERVICES} <= set(services)
    assert not any("zookeeper" in name for name in services)
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_variables_are_read_by_settings(service):
    """Each variable given to the app is read by fraudsite/settings.py."""
    environment = COMPOSE["services"][service]["environment"]
    for name in environment:
        assert re.search(rf'"{name}"', SETTINGS_TEXT), f"{name} is not a setting"


def test_app_points_at_the_compose_services():
    """The app reaches the compose services by name."""
    env = COMPOSE["services"]["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://")
    assert "@postgres:" in env["DATABASE_URL"]
    assert env["KAFKA_BROKER"] == "kafka:9092"
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["DEBUG"] == "0"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_commands_exist(service):
    """manage.py commands, the ASGI app and the Celery app named by compose exist."""
    command = COMPOSE["services"][service]["command"]
    if command[:2] == ["python", "manage.py"]:
        assert command[2] in get_commands()
    elif command[0] == "daphne":
        from fraudsite.asgi import application

        assert command[-1] == "fraudsite.asgi:application" and application
    else:
        from fraudsite.celery import app

        assert command[:3] == ["celery", "-A", "fraudsite"] and app.main == "fraudsite"


# Compose's interpolation of ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error} and $NAME; $$ is a literal $.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolated(value, variables: dict[str, str]):
    """Return `value` (the loaded YAML) as Compose would run it with `variables`
    in the shell or .env."""
    if isinstance(value, dict):
        return {key: interpolated(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        unset = name not in variables or (op.startswith(":") and not variables[name])
        if unset and op.endswith("-"):
            return arg
        if unset and op.endswith("?"):
            raise ValueError(f"{name}: {arg}")
        return variables.get(name, "")

    return INTERPOLATION.sub(one, value)


@pytest.mark.parametrize("variables", [{}, {"CELERY_BACKTEST_QUEUE": "replays"}])
def test_backtest_jobs_have_a_worker_of_their_own(variables):
    """The queue the web service puts backtest jobs on is the backtest worker's,
    and the main worker (retrains, webhooks) leaves it alone, with the default
    queue and with one set in the shell or .env."""
    from django.conf import settings

    services = interpolated(COMPOSE["services"], {"SECRET_KEY": "x" * 50, **variables})

    def option(service: str, name: str) -> str:
        command = services[service]["command"]
        return command[command.index(name) + 1]

    queue = services["web"]["environment"]["CELERY_BACKTEST_QUEUE"]
    assert queue == variables.get("CELERY_BACKTEST_QUEUE", "backtests")
    assert option("celery-backtests", "--queues") == queue
    assert option("celery-worker", "--exclude-queues") == queue
    assert queue != settings.CELERY_TASK_DEFAULT_QUEUE
    # The compose default is the settings' own.
    assert re.search(
        r'env\.str\("CELERY_BACKTEST_QUEUE", default="backtests"\)', SETTINGS_TEXT
    )


def test_interpolation_as_compose_does_it():
    """The helper above follows Compose's rules (so the test above can fail)."""
    text = "a ${X:-d} ${Y-e} ${Z} $$W $X"
    assert interpolated(text, {}) == "a d e  $W "
    assert interpolated(text, {"X": "1", "Y": "", "Z": "3"}) == "a 1  3 $W 1"
    assert interpolated("${X:-d}", {"X": ""}) == "d"
    with pytest.raises(ValueError, match="SECRET_KEY: set SECRET_KEY"):
        interpolated(COMPOSE["services"]["web"]["environment"], {})


@pytest.mark.parametrize("service", [s for s in APP_SERVICES if s != "migrate"])
def test_processes_start_after_migrations_and_restart(service):
    """Every long-running process waits for the migrate job to succeed (a fresh
    database has no tables) and for the infrastructure, and restarts on failure."""
    spec = COMPOSE["services"][service]
    assert spec["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert {"postgres", "redis", "kafka"} <= set(spec["depends_on"])
    assert spec["restart"] == "unless-stopped"
    assert COMPOSE["services"]["migrate"]["restart"] == "no"


def test_env_example_documents_every_variable():
    """Every variable the settings read is listed in .env.example."""
    documented = {
        line.split("=")[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', SETTINGS_TEXT))
    assert read - documented == set()


def test_image_leaves_local_secrets_and_data_out():
    """The Dockerfile copies the project folder: .dockerignore keeps the local .env
    (SECRET_KEY), var/ (the SQLite file with password hashes and API tokens), the
    virtual environment and the git history out of the image."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "var/", ".venv/", ".git/"} <= ignored
    assert "COPY . ." in (ROOT / "Dockerfile").read_text()


def _interpolated(value) -> str:
    """Return a compose value as Compose fills it with nothing set but the
    required SECRET_KEY (`interpolated`)."""
    return str(interpolated(value, {"SECRET_KEY": "x" * 50}))


def test_the_app_environment_passes_the_settings_checks():
    """The settings load with exactly the environment compose gives the app (a
    value the settings refuse, such as a bad limit, would stop every container)."""
    from tests.test_settings import settings_value

    env = {
        name: _interpolated(value)
        for name, value in COMPOSE["services"]["web"]["environment"].items()
    }
    result = settings_value(
        "s.DATABASES['default']['ENGINE'], s.TRANSACTION_MAX_FUTURE_SECONDS,"
        " s.MODEL_LABEL_MATURITY_SECONDS",
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "None", "0.0"]


def test_a_local_env_file_reaches_the_containers():
    """Settings compose does not set (CSRF_TRUSTED_ORIGINS, SITE_URL,
    METRICS_TOKEN...) come from a .env beside it, when there is one; without
    one, compose still starts. Every address of the infrastructure is set by
    compose itself (its `environment` beats the file), so a .env written for
    `make run` (127.0.0.1) cannot point the containers away from its services."""
    addresses = {
        "DATABASE_URL",
        "KAFKA_BROKER",
        "REDIS_URL",
        "CACHE_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
    }
    for service in APP_SERVICES:
        spec = COMPOSE["services"][service]
        assert spec["env_file"] == [{"path": ".env", "required": False}]
        assert addresses <= set(spec["environment"])
        for name in addresses:
            assert "127.0.0.1" not in spec["environment"][name]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_command_options_are_ones_the_commands_take(service):
    """A manage.py command's options parse with the command's own parser (an
    option renamed in the code, or a bad value, fails here, not in a container)."""
    from django.core.management import load_command_class

    command = COMPOSE["services"][service]["command"]
    if command[:2] != ["python", "manage.py"]:
        return
    name = command[2]
    parser = load_command_class(get_commands()[name], name).create_parser(
        "manage.py", name
    )
    parser.parse_args(command[3:])


def test_the_simulator_service_carries_on_after_a_restart():
    """The producer's clock runs ahead of the wall clock: restarted, it starts
    after what it already sent, and the app accepts its far-ahead dates."""
    producer = COMPOSE["services"]["producer"]["command"]
    assert producer[producer.index("--start") + 1] == "after-stored"
    env = COMPOSE["services"]["producer"]["environment"]
    assert _interpolated(env["TRANSACTION_MAX_FUTURE_SECONDS"]) == "off"
    assert _interpolated(env["MODEL_LABEL_MATURITY_SECONDS"]) == "0"


def test_beats_schedule_outlives_its_container():
    """Beat keeps when each task last ran in CELERY_BEAT_SCHEDULE_FILENAME: on
    a volume, so that a redeploy does not restart the daily retrain's
    countdown (deploys more often than daily would never retrain)."""
    from tests.test_settings import settings_value

    result = settings_value("s.CELERY_BEAT_SCHEDULE_FILENAME", DEBUG="1")
    schedule = Path(result.stdout.strip())
    in_image = Path("/app") / schedule.relative_to(ROOT)
    beat = COMPOSE["services"]["celery-beat"]
    mounted = [
        Path(volume.split(":")[1])
        for volume in beat.get("volumes", [])
        if volume.split(":")[0] in COMPOSE["volumes"]
    ]
    assert any(in_image.is_relative_to(target) for target in mounted), mounted


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_retrain_interval_of_zero_or_less_is_refused(value):
    from tests.test_settings import settings_value

    result = settings_value(
        "s.CELERY_BEAT_SCHEDULE", DEBUG="1", MODEL_RETRAIN_INTERVAL_SECONDS=value
    )
    assert result.returncode != 0
    assert "MODEL_RETRAIN_INTERVAL_SECONDS must be above 0" in result.stderr
