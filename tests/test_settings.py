"""Settings come from the environment, fail closed, and keep SQLite concurrent."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def settings_value(expression: str, **env: str) -> subprocess.CompletedProcess:
    """Import fraudsite.settings in a clean process with `env`; print `expression`."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "TRANSACTIONS_DB_PATH"}
    }
    return subprocess.run(
        [sys.executable, "-c", f"import fraudsite.settings as s; print({expression})"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
    )


def test_a_topic_name_kafka_refuses_stops_start_up():
    """A dead-letter topic Kafka cannot have (spaces) is refused when settings
    load, not when the first bad record needs it; empty means none."""
    bad = settings_value(
        "s.KAFKA_DEAD_LETTER_TOPIC",
        DEBUG="1",
        KAFKA_DEAD_LETTER_TOPIC="transactions dead letters",
    )
    assert bad.returncode != 0 and "KAFKA_DEAD_LETTER_TOPIC" in bad.stderr
    good = settings_value(
        "s.KAFKA_DEAD_LETTER_TOPIC", DEBUG="1", KAFKA_DEAD_LETTER_TOPIC="txn.dlq"
    )
    assert good.stdout.strip() == "txn.dlq"
    none = settings_value("repr(s.KAFKA_DEAD_LETTER_TOPIC)", DEBUG="1")
    assert none.stdout.strip() == "''"


def test_secret_key_is_required_without_debug():
    """With DEBUG off and no SECRET_KEY, settings refuse to load."""
    result = settings_value("s.DEBUG")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_command_without_settings_says_what_is_missing_in_one_line():
    """`manage.py` without DEBUG or SECRET_KEY: the settings' message, and no
    traceback above it (unless asked for with --traceback); exit status 1."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    }
    for extra, traceback in (([], False), (["--traceback"], True)):
        result = subprocess.run(
            [sys.executable, "manage.py", "check", *extra],
            cwd=ROOT,
            env=clean,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1
        assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
        assert ("Traceback" in result.stderr) is traceback
        if not traceback:
            assert result.stderr.startswith("Configuration error: SECRET_KEY")
            assert len(result.stderr.strip().splitlines()) == 1


def test_lists_and_the_log_level_take_what_people_write():
    """Hosts and origins written with spaces after the commas are each host
    (" www.a.example" matched no request); LOG_LEVEL takes any case, and an
    unknown level is a clear error."""
    hosts = settings_value(
        "s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS",
        DEBUG="1",
        ALLOWED_HOSTS="a.example, www.a.example,",
        CSRF_TRUSTED_ORIGINS=" https://a.example , https://www.a.example",
    )
    assert hosts.stdout.strip() == (
        "['a.example', 'www.a.example'] ['https://a.example', 'https://www.a.example']"
    ), hosts.stderr
    level = settings_value("s.LOGGING['root']['level']", DEBUG="1", LOG_LEVEL="info")
    assert level.stdout.strip() == "INFO"
    loud = settings_value("s.LOG_LEVEL", DEBUG="1", LOG_LEVEL="loud")
    assert loud.returncode != 0 and "LOG_LEVEL must be one of" in loud.stderr


def test_debug_is_off_by_default():
    """DEBUG is off unless set."""
    result = settings_value("s.DEBUG", SECRET_KEY="x" * 50)
    assert result.stdout.strip() == "False"


def test_predecessor_db_path_still_works(tmp_path):
    """TRANSACTIONS_DB_PATH picks the SQLite file when DATABASE_URL is unset."""
    path = tmp_path / "legacy.db"
    result = settings_value(
        "s.DATABASES['default']['NAME']", DEBUG="1", TRANSACTIONS_DB_PATH=str(path)
    )
    assert result.stdout.strip() == str(path)


def test_database_url_wins(tmp_path):
    """DATABASE_URL selects PostgreSQL (or anything dj URL-parsable)."""
    result = settings_value(
        "s.DATABASES['default']['ENGINE']",
        DEBUG="1",
        DATABASE_URL="postgres://u:p@127.0.0.1:5432/test",
    )
    assert result.stdout.strip() == "django.db.backends.postgresql"


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout():
    """The web server, consumer and Celery can write at once without 'locked'."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's journal mode; this run uses another database")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000


def test_cookies_are_secure_unless_debug_or_told():
    """Outside DEBUG, session and CSRF cookies are HTTPS-only unless the
    deployment says it serves plain HTTP (SECURE_COOKIES=0)."""
    expression = "(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    key = "k" * 50
    assert settings_value(expression, SECRET_KEY=key).stdout.strip() == "(True, True)"
    plain = settings_value(expression, SECRET_KEY=key, SECURE_COOKIES="0")
    assert plain.stdout.strip() == "(False, False)"
    debug = settings_value(expression, DEBUG="1")
    assert debug.stdout.strip() == "(False, False)"
    proxied = settings_value(
        "s.SECURE_PROXY_SSL_HEADER", SECRET_KEY=key, USE_X_FORWARDED_PROTO="1"
    )
    assert proxied.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_the_test_run_pushes_on_its_own_channel_group(settings):
    """The test run (and the processes it starts) use their own channel-layer
    prefix, so its verdicts never reach a dashboard of `make run` on this Redis."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    run_id = os.environ["FRAUDSITE_TEST_RUN"]
    assert prefix == os.environ["CHANNEL_LAYER_PREFIX"] == f"test-{run_id}"
    assert prefix != "asgi"


def test_base_currency_must_be_an_iso_code():
    """BASE_CURRENCY is upper-cased; anything but a currency in use stops start-up."""
    good = settings_value("s.BASE_CURRENCY", DEBUG="1", BASE_CURRENCY="eur")
    assert good.stdout.strip() == "EUR"
    bad = settings_value("s.BASE_CURRENCY", DEBUG="1", BASE_CURRENCY="EURO")
    assert bad.returncode != 0 and "BASE_CURRENCY" in bad.stderr
    typo = settings_value("s.BASE_CURRENCY", DEBUG="1", BASE_CURRENCY="EUD")
    assert typo.returncode != 0
    assert "BASE_CURRENCY 'EUD' is not the ISO 4217 code" in typo.stderr


def test_an_empty_value_means_the_default():
    """`KEY=` (a copied .env.example) is "unset": Secure cookies stay on without
    DEBUG, Celery keeps Redis, the database stays SQLite, limits keep defaults."""
    result = settings_value(
        "s.SESSION_COOKIE_SECURE, s.CELERY_BROKER_URL == s.REDIS_URL, "
        "s.DATABASES['default']['ENGINE'], s.TRANSACTION_MAX_FUTURE_SECONDS, "
        "s.API_THROTTLE_RATES['user']",
        SECRET_KEY="x" * 50,
        SECURE_COOKIES="",
        CELERY_BROKER_URL="",
        CELERY_RESULT_BACKEND="",
        DATABASE_URL="",
        TRANSACTION_MAX_FUTURE_SECONDS="",
        API_THROTTLE_USER_RATE="",
        CACHE_URL="",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "True",
        "True",
        "django.db.backends.sqlite3",
        "300.0",
        "200/s",
    ]


def test_env_example_as_is_gives_the_documented_defaults():
    """Every `KEY=VALUE` line of .env.example, exported verbatim, gives the same
    settings as no variables at all (its values are the defaults)."""
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    expression = (
        "s.SESSION_COOKIE_SECURE, s.CELERY_BROKER_URL, s.CELERY_RESULT_BACKEND, "
        "s.DATABASES['default']['NAME'], s.TRANSACTION_MAX_FUTURE_SECONDS, "
        "s.API_THROTTLE_RATES, s.CACHES['default']['LOCATION'], s.BASE_CURRENCY, "
        "s.STREAM_BATCH_MAX_RECORDS, s.REST_FRAMEWORK['NUM_PROXIES'], "
        "s.STREAM_DB_REFUSED_IN_A_ROW"
    )
    plain = settings_value(expression, SECRET_KEY="x" * 50)
    copied = settings_value(expression, **{**example, "SECRET_KEY": "x" * 50})
    assert plain.returncode == copied.returncode == 0, copied.stderr
    assert copied.stdout == plain.stdout
    assert plain.stdout.startswith("True redis://")


def test_off_switches_the_future_limit_off():
    result = settings_value(
        "s.TRANSACTION_MAX_FUTURE_SECONDS",
        DEBUG="1",
        TRANSACTION_MAX_FUTURE_SECONDS="off",
    )
    assert result.stdout.strip() == "None"


@pytest.mark.parametrize(
    ("value", "expected"), [("", "50"), ("off", "None"), (" 7 ", "7")]
)
def test_refusals_in_a_row_take_a_count_or_off(value, expected):
    """STREAM_DB_REFUSED_IN_A_ROW: a count, `off`, or empty for the default."""
    result = settings_value(
        "s.STREAM_DB_REFUSED_IN_A_ROW", DEBUG="1", STREAM_DB_REFUSED_IN_A_ROW=value
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_refusals_in_a_row_refuse_what_is_no_count(value):
    result = settings_value(
        "s.STREAM_DB_REFUSED_IN_A_ROW", DEBUG="1", STREAM_DB_REFUSED_IN_A_ROW=value
    )
    assert result.returncode != 0
    assert "STREAM_DB_REFUSED_IN_A_ROW must be a whole number of at least 1" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        # django-environ kept the digits: 30 seconds, 1 s, 5.5.
        ("MODEL_LABEL_MATURITY_SECONDS", "30d", "must be a number: '30d'"),
        ("MODEL_RETRAIN_INTERVAL_SECONDS", "1h", "must be a number: '1h'"),
        ("MODEL_ACTIVATION_MAX_AP_DROP", "0.5.5", "must be a number: '0.5.5'"),
        ("STREAM_PROGRESS_LOG_SECONDS", "nan", "must be a number: 'nan'"),
        ("WEBHOOK_RETENTION_DAYS", "inf", "must be a number: 'inf'"),
        # A bare ValueError before.
        ("STREAM_BATCH_MAX_RECORDS", "abc", "must be a whole number: 'abc'"),
        ("STREAM_BATCH_MAX_WAIT_MS", "1.5", "must be a whole number: '1.5'"),
        # Taken before; failed later, or never.
        ("KAFKA_TOPIC_PARTITIONS", "0", "must be at least 1: '0'"),
        ("STREAM_BATCH_MAX_RECORDS", "0", "must be at least 1: '0'"),
        ("STREAM_DB_RETRY_LIMIT", "-1", "must be at least 0: '-1'"),
        ("STREAM_PUSH_MIN_INTERVAL_SECONDS", "-1", "must be at least 0: '-1'"),
    ],
)
def test_a_number_setting_takes_a_number_and_names_what_it_refuses(name, value, error):
    """A number setting with anything else in it stops start-up with one line
    naming the variable (manage.py: "Configuration error: ..."), instead of a
    number made of its digits or a traceback."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "1", name: value},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == f"Configuration error: {name} {error}."


def test_a_number_setting_takes_spaces_underscores_and_exponents():
    result = settings_value(
        "s.STREAM_BATCH_MAX_RECORDS, s.MODEL_LABEL_MATURITY_SECONDS",
        DEBUG="1",
        STREAM_BATCH_MAX_RECORDS=" 1_000 ",
        MODEL_LABEL_MATURITY_SECONDS="2.592e6",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "2592000.0"]
