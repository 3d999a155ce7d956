"""Settings for fraudsite, read from the environment with safe defaults.

Every variable is documented in `.env.example` and in the README's table. Production
fails closed: `DEBUG` is off unless set, and there is no default `SECRET_KEY` outside
DEBUG.
"""

import builtins
import math
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from fraudsite.kafka_names import TOPIC_NAME_RULE, topic_name_ok
from transactions.messages import currency_codes

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


class _Env(environ.Env):
    """django-environ, where an empty value (`KEY=`, as in a copied `.env.example`)
    means "not set": the default applies. (Plain django-environ reads `SECURE_COOKIES=`
    as False and `CELERY_BROKER_URL=` as "use amqp://localhost".) Where a setting can
    be switched off, the word is `off`."""

    def get_value(
        self, var, cast=None, default=environ.Env.NOTSET, parse_default=False
    ):
        if self.ENVIRON.get(var) == "" and default is not self.NOTSET:
            return super().get_value(
                "\0unset", cast=cast, default=default, parse_default=parse_default
            )
        return super().get_value(
            var, cast=cast, default=default, parse_default=parse_default
        )

    def int(self, var, default=environ.Env.NOTSET, *, minimum=0):
        """Return a whole number of at least `minimum`, or stop start-up naming
        the variable (django-environ raised a bare ValueError for `abc`)."""
        return self._number(var, builtins.int, "a whole number", default, minimum)

    def float(self, var, default=environ.Env.NOTSET, *, minimum=0):
        """Return a finite number of at least `minimum`, or stop start-up naming
        the variable: django-environ read `30d` as 30, `1h` as 1 and `0.5.5` as
        5.5, dropping what was not a digit, and `nan` as an error about ''."""
        return self._number(var, builtins.float, "a number", default, minimum)

    def _number(self, var, cast, kind, default, minimum):
        raw = self.ENVIRON.get(var, "").strip()
        if not raw:
            if default is self.NOTSET:
                raise ImproperlyConfigured(f"Set {var}.")
            return default
        try:
            value = cast(raw)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise ImproperlyConfigured(f"{var} must be {kind}: {raw!r}.")
        if value < minimum:
            raise ImproperlyConfigured(f"{var} must be at least {minimum}: {raw!r}.")
        return value

    def list(self, var, cast=None, default=environ.Env.NOTSET):
        """Return a comma-separated list with its items stripped and empty
        ones dropped: "a.example, www.a.example" is two hosts (django-environ
        kept " www.a.example", which matches no request)."""
        items = super().list(var, cast=cast, default=default)
        return [
            item.strip() if isinstance(item, str) else item
            for item in items
            if not isinstance(item, str) or item.strip()
        ]


env = _Env()
# A local `.env` is read when present, so developers need not export variables.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

if DEBUG:
    # Development only: a fixed, obviously insecure key keeps sessions across restarts.
    SECRET_KEY = env.str(
        "SECRET_KEY", default="dev-insecure-key-do-not-use-in-production"
    )
else:
    SECRET_KEY = env.str("SECRET_KEY", default="")
    if not SECRET_KEY:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (set DEBUG=1 for development)."
        )

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS ---------------------------------------------------------------------
# Session and CSRF cookies travel only over HTTPS unless DEBUG is on (fail closed);
# a deployment served over plain HTTP must say so with SECURE_COOKIES=0.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool(
    "SECURE_COOKIES", default=not DEBUG
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    # Only behind a proxy that sets this header itself: a client could forge it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    # daphne first: it makes `runserver` an ASGI server, so websockets work in dev.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc files, served locally
    "channels",
    "axes",
    "transactions",
    "detection",
    "dashboard",
]

MIDDLEWARE = [
    "fraudsite.middleware.RequestErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads the body (CSRF reads the form): DRF needs its length.
    "fraudsite.middleware.ChunkedBodyLengthMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its 429 page.
    "axes.middleware.AxesMiddleware",
]

# Sign-in lockout (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one
# username from one address, that pair is refused (HTTP 429) for
# LOGIN_LOCKOUT_MINUTES, at the dashboard's, the admin's and the browsable API's
# sign-in alike. Attempts and sign-ins are listed in the admin (Axes), where an
# admin can also lift a lockout; so does `manage.py axes_reset_username NAME`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# The client's address as the API throttles see it (NUM_PROXIES), not the proxy's.
AXES_CLIENT_IP_CALLABLE = "fraudsite.throttling.client_address"
AXES_VERBOSE = False

ROOT_URLCONF = "fraudsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "fraudsite.wsgi.application"
ASGI_APPLICATION = "fraudsite.asgi.application"


def _database_url_default() -> str:
    """Return the default DATABASE_URL: SQLite under var/, or the legacy path."""
    legacy_path = env.str("TRANSACTIONS_DB_PATH", default="")
    if legacy_path:
        # The predecessor's variable keeps working for existing deployments.
        return f"sqlite:///{Path(legacy_path).resolve()}"
    return f"sqlite:///{VAR_DIR / 'transactions.sqlite3'}"


DATABASES = {"default": env.db_url("DATABASE_URL", default=_database_url_default())}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web server read while the consumer and Celery write; the busy
        # timeout and IMMEDIATE transactions make concurrent writers wait for the
        # lock instead of failing with "database is locked".
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            "PRAGMA busy_timeout=30000;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests use a file, not memory: consumer subprocesses must see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_transactions.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_PASSWORD_VALIDATION = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_PASSWORD_VALIDATION}.UserAttributeSimilarityValidator"},
    {"NAME": f"{_PASSWORD_VALIDATION}.MinimumLengthValidator"},
    {"NAME": f"{_PASSWORD_VALIDATION}.CommonPasswordValidator"},
    {"NAME": f"{_PASSWORD_VALIDATION}.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# whitenoise warns about a missing STATIC_ROOT; collectstatic fills it for production.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve app static files straight from their folders when DEBUG or under tests, so
# nobody has to run collectstatic before `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# --- Services ---------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
KAFKA_BROKER = env.str("KAFKA_BROKER", default="")
KAFKA_TRANSACTIONS_TOPIC = env.str("KAFKA_TRANSACTIONS_TOPIC", default="transactions")
KAFKA_DEAD_LETTER_TOPIC = env.str("KAFKA_DEAD_LETTER_TOPIC", default="")
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=6, minimum=1)
KAFKA_CONSUMER_GROUP = env.str("KAFKA_CONSUMER_GROUP", default="fraud-scorer")
# Chargebacks (and other after-the-fact fraud reports) labelling stored transactions:
# detection.chargebacks, manage.py consume_chargebacks.
KAFKA_CHARGEBACKS_TOPIC = env.str("KAFKA_CHARGEBACKS_TOPIC", default="chargebacks")
KAFKA_CHARGEBACKS_GROUP = env.str("KAFKA_CHARGEBACKS_GROUP", default="fraud-labels")
# Kafka's rule for topic names, checked at start-up: a bad dead-letter topic
# would otherwise fail only at the first bad record, days after a deploy.
for _setting in (
    "KAFKA_TRANSACTIONS_TOPIC",
    "KAFKA_DEAD_LETTER_TOPIC",
    "KAFKA_CHARGEBACKS_TOPIC",
):
    _topic = globals()[_setting]
    if (_topic or _setting != "KAFKA_DEAD_LETTER_TOPIC") and not topic_name_ok(_topic):
        raise ImproperlyConfigured(f"{_setting} must be {TOPIC_NAME_RULE}: {_topic!r}.")

# Micro-batching of the stream consumer: a batch closes at this many records or
# after this many milliseconds, whichever comes first.
STREAM_BATCH_MAX_RECORDS = env.int("STREAM_BATCH_MAX_RECORDS", default=500, minimum=1)
STREAM_BATCH_MAX_WAIT_MS = env.int("STREAM_BATCH_MAX_WAIT_MS", default=50)
STREAM_DB_RETRY_LIMIT = env.int("STREAM_DB_RETRY_LIMIT", default=8)
# A consumer stops (non-zero exit, offsets not committed) once the database has
# refused this many records in a row, each alone, storing none between them:
# that is a fault of the database (a migration not applied, a constraint added),
# and dead-lettering would only move the whole stream to the dead-letter table.
# One bad record among good ones is a dead letter. `off`: never stop.
_refused_in_a_row = env.str("STREAM_DB_REFUSED_IN_A_ROW", default="50").strip()
if _refused_in_a_row.lower() == "off":
    STREAM_DB_REFUSED_IN_A_ROW = None
elif _refused_in_a_row.isdigit() and int(_refused_in_a_row) >= 1:
    STREAM_DB_REFUSED_IN_A_ROW = int(_refused_in_a_row)
else:
    raise ImproperlyConfigured(
        "STREAM_DB_REFUSED_IN_A_ROW must be a whole number of at least 1, or "
        f"off: {_refused_in_a_row!r}."
    )
# A consumer keeps the states of at most this many users in memory (about 2 KB
# each), those written most recently; others are read from the database.
STREAM_STATE_CACHE_MAX_USERS = env.int("STREAM_STATE_CACHE_MAX_USERS", default=200_000)
# How often a consumer logs its progress: records, rate, dead letters, lag.
STREAM_PROGRESS_LOG_SECONDS = env.float("STREAM_PROGRESS_LOG_SECONDS", default=10.0)
# The stream and the API refuse transactions dated more than this many seconds
# after they arrive (a producer's wrong clock, a typo'd year): trusted, such a date
# would carry the card's state with it and turn its travel checks off until then.
# `off`: no limit (`make run` sets it, as its simulator runs ahead of the clock).
# 5 minutes: clocks a few minutes apart pass; a payment may blind its card's
# travel check for no longer than that (a day let one do it for a day).
_max_future = env.str("TRANSACTION_MAX_FUTURE_SECONDS", default="300").strip()
try:
    TRANSACTION_MAX_FUTURE_SECONDS = (
        None if _max_future.lower() == "off" else float(_max_future)
    )
except ValueError:
    TRANSACTION_MAX_FUTURE_SECONDS = float("nan")
if TRANSACTION_MAX_FUTURE_SECONDS is not None and not (
    0 <= TRANSACTION_MAX_FUTURE_SECONDS <= 100 * 365 * 86400
):
    raise ImproperlyConfigured(
        "TRANSACTION_MAX_FUTURE_SECONDS must be a number of seconds from 0 to "
        f"100 years, or off for no limit; got {_max_future!r}."
    )

# Amounts are compared in this currency: rules' amount limits are in it, and
# other currencies are converted with the ExchangeRate rows (admin). Messages in a
# currency without a rate are refused (dead letter, API 400), never compared as
# if they were this currency.
BASE_CURRENCY = env.str("BASE_CURRENCY", default="USD").strip().upper()
if not re.fullmatch(r"[A-Z]{3}", BASE_CURRENCY):
    raise ImproperlyConfigured(
        f"BASE_CURRENCY must be an ISO 4217 code (three letters): {BASE_CURRENCY!r}."
    )
if BASE_CURRENCY not in currency_codes():
    raise ImproperlyConfigured(
        f"BASE_CURRENCY {BASE_CURRENCY!r} is not the ISO 4217 code of a currency "
        "in use (e.g. USD, EUR, GBP)."
    )

# How often running scorers re-read rules, thresholds and the active model.
DETECTION_CONFIG_REFRESH_SECONDS = env.float(
    "DETECTION_CONFIG_REFRESH_SECONDS", default=2.0
)

# The retrain's activation gate (detection.registry.challenger_decision): with at
# least this many analyst/chargeback labels of each kind on the replayed history, a
# new model is activated only if its average precision on them is no more than
# MODEL_ACTIVATION_MAX_AP_DROP below the active model's; otherwise it is stored
# inactive (the admin's Activate action or `retrain_model --force` overrides).
MODEL_ACTIVATION_MIN_LABELS = env.int("MODEL_ACTIVATION_MIN_LABELS", default=10)
MODEL_ACTIVATION_MAX_AP_DROP = env.float("MODEL_ACTIVATION_MAX_AP_DROP", default=0.05)
# And, labels or not: one that alone would flag more than this share of the newest
# stored transactions (featurized with their history, as live scoring sees them)
# is stored inactive, unless the active model would flag even more of them; so is
# one that would flag more than MAX_FLAG_RISE times what the active model flags.
MODEL_ACTIVATION_MAX_FLAG_RATE = env.float(
    "MODEL_ACTIVATION_MAX_FLAG_RATE", default=0.10
)
MODEL_ACTIVATION_MAX_FLAG_RISE = env.float(
    "MODEL_ACTIVATION_MAX_FLAG_RISE", default=2.0
)
# The classifier beside the forest (detection.classifier): trained by a retrain
# with at least this many confirmed frauds (and legitimate payments); unlabelled
# transactions count as legitimate once older than MODEL_LABEL_MATURITY_SECONDS
# (chargebacks arrive within weeks; `make run`'s simulated ones within a minute).
MODEL_CLASSIFIER_MIN_LABELS = env.int("MODEL_CLASSIFIER_MIN_LABELS", default=50)
MODEL_LABEL_MATURITY_SECONDS = env.float(
    "MODEL_LABEL_MATURITY_SECONDS", default=30 * 86400
)

# The cache holds API throttle counts; in Redis so every web process shares them.
# Short timeouts: throttling fails open (fraudsite.throttling) rather than wait.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="fraudsite"),
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "capacity": 1000,
            "expiry": 10,
            # Key prefix in Redis: deployments (or test runs) sharing one Redis
            # keep their live events apart with different prefixes.
            "prefix": env.str("CHANNEL_LAYER_PREFIX", default="asgi"),
        },
    }
}

# --- Alert webhooks (detection.alerts; endpoints are set up in admin) ----------------
# Flagged verdicts are queued with the verdicts and sent by Celery this often;
# a failed POST is retried after WEBHOOK_RETRY_BASE_SECONDS, doubling each time
# (at most 6 h apart), and marked failed after WEBHOOK_MAX_ATTEMPTS.
WEBHOOK_SEND_INTERVAL_SECONDS = env.float("WEBHOOK_SEND_INTERVAL_SECONDS", default=5.0)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=10, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
# Where analysts open the dashboard (https://fraud.example.com): alerts then carry
# a link to the transaction's page. Empty: no link.
SITE_URL = env.str("SITE_URL", default="").rstrip("/")
# Each send run claims this many at a time and POSTs this many at once.
WEBHOOK_SEND_BATCH = env.int("WEBHOOK_SEND_BATCH", default=500, minimum=1)
WEBHOOK_SEND_CONCURRENCY = env.int("WEBHOOK_SEND_CONCURRENCY", default=8, minimum=1)
# Delivered alerts are kept this long (admin), then deleted; failed ones stay.
WEBHOOK_RETENTION_DAYS = env.float("WEBHOOK_RETENTION_DAYS", default=30.0)
if not (
    WEBHOOK_SEND_INTERVAL_SECONDS > 0
    and 0 < WEBHOOK_TIMEOUT_SECONDS <= 60
    and WEBHOOK_MAX_ATTEMPTS >= 1
    and WEBHOOK_RETRY_BASE_SECONDS > 0
    and WEBHOOK_SEND_BATCH >= 1
    and 1 <= WEBHOOK_SEND_CONCURRENCY <= 64
    and WEBHOOK_RETENTION_DAYS > 0
):
    raise ImproperlyConfigured(
        "Webhook settings: WEBHOOK_SEND_INTERVAL_SECONDS and "
        "WEBHOOK_RETRY_BASE_SECONDS must be above 0, WEBHOOK_TIMEOUT_SECONDS "
        "within 0..60 (exclusive of 0), WEBHOOK_MAX_ATTEMPTS and "
        "WEBHOOK_SEND_BATCH at least 1, WEBHOOK_SEND_CONCURRENCY within 1..64 "
        "and WEBHOOK_RETENTION_DAYS above 0."
    )

# --- Celery -----------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# Backtest jobs (POST /api/backtest/jobs) have a queue of their own, so that a
# replay of a million rows never holds up the webhook sender or a retrain: `make
# run` and compose give it its own worker (one job at a time) and keep it off
# the main one (`--exclude-queues`). A worker started without --queues takes both.
CELERY_BACKTEST_QUEUE = env.str("CELERY_BACKTEST_QUEUE", default="backtests")
CELERY_TASK_QUEUES = tuple(
    Queue(name)
    for name in dict.fromkeys([CELERY_TASK_DEFAULT_QUEUE, CELERY_BACKTEST_QUEUE])
)
CELERY_TIMEZONE = TIME_ZONE
# Beat's state file lives with the other runtime files, not in the project root.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
MODEL_RETRAIN_INTERVAL_SECONDS = env.float(
    "MODEL_RETRAIN_INTERVAL_SECONDS", default=24 * 3600, minimum=-math.inf
)  # checked just below, with its own message
if not MODEL_RETRAIN_INTERVAL_SECONDS > 0:
    # 0 made beat queue retrains back to back.
    raise ImproperlyConfigured(
        "MODEL_RETRAIN_INTERVAL_SECONDS must be above 0 (86400: daily); got "
        f"{MODEL_RETRAIN_INTERVAL_SECONDS!r}."
    )
CELERY_BEAT_SCHEDULE = {
    "retrain-model-daily": {
        "task": "detection.tasks.model_retrain_task",
        "schedule": MODEL_RETRAIN_INTERVAL_SECONDS,
        # A retrain still queued when the next is due is dropped: after a
        # worker's downtime, one retrain runs, not a day's backlog at once.
        "options": {"expires": MODEL_RETRAIN_INTERVAL_SECONDS},
    },
    "send-alert-webhooks": {
        "task": "detection.tasks.alerts_send_task",
        "schedule": WEBHOOK_SEND_INTERVAL_SECONDS,
        # A send that waited longer than one interval is dropped: the next one
        # picks up everything due, so a busy worker never piles them up.
        "options": {"expires": WEBHOOK_SEND_INTERVAL_SECONDS},
    },
}

# --- REST framework ----------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its `WWW-Authenticate: Token` header makes DRF answer missing
    # or bad credentials with 401 (with the session class first it is a 403,
    # which clients take for "not allowed"). Browsers still sign in by session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["fraudsite.permissions.CanRead"],
    "DEFAULT_PARSER_CLASSES": [
        "fraudsite.parsers.BoundedJSONParser",
        "fraudsite.parsers.BoundedFormParser",
        "fraudsite.parsers.BoundedMultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": (
        "fraudsite.negotiation.StrictContentNegotiation"
    ),
    # Clients are told apart by REMOTE_ADDR, or behind this many proxies by the
    # X-Forwarded-For entry the nearest of them added; never by what a client sends.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    "DEFAULT_THROTTLE_CLASSES": [
        "fraudsite.throttling.UserThrottle",
        "fraudsite.throttling.AnonThrottle",
    ],
    # DRF's, but a call that fails authentication counts against the "anon" limit.
    "EXCEPTION_HANDLER": "fraudsite.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Fraudsite API",
    "DESCRIPTION": "Real-time payments fraud monitoring: verdicts, what-if scoring.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page's scripts come from the drf-spectacular-sidecar wheel, not a CDN
    # (Redoc is not offered: it fetches fonts and assets from the internet).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}
# Request limits (DRF rate syntax: "N/s", "N/min", "N/hour", "N/day"; `off`: none).
# Over the limit, the API answers 429 with Retry-After. Per signed-in user: generous
# for a dashboard or a gateway calling /api/predict; per address for calls without
# valid credentials (health, schema, and 401s: a bad token or none where one is
# needed, see fraudsite.exceptions.exception_handler). Counts are kept in the cache.
API_THROTTLE_RATES = {
    scope: None if rate.strip().lower() == "off" else rate.strip()
    for scope, rate in (
        ("user", env.str("API_THROTTLE_USER_RATE", default="200/s")),
        ("anon", env.str("API_THROTTLE_ANON_RATE", default="20/s")),
        # POST /api/predict has its own limit, off by default (a gateway's token).
        ("predict", env.str("API_THROTTLE_PREDICT_RATE", default="off")),
    )
}
_throttle_rate = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")
for _scope, _rate in API_THROTTLE_RATES.items():
    if _rate and not _throttle_rate.fullmatch(_rate):
        raise ImproperlyConfigured(
            f"API_THROTTLE_{_scope.upper()}_RATE must look like 100/s, 600/min, "
            f"5000/hour or 50000/day, or be off for no limit; got {_rate!r}."
        )
# Prometheus scrapes /metrics with `Authorization: Bearer <METRICS_TOKEN>`; unset,
# only signed-in staff can read it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
API_TRANSACTIONS_MAX_PAGE_SIZE = env.int(
    "API_TRANSACTIONS_MAX_PAGE_SIZE", default=500, minimum=1
)
# Most rows one CSV export (GET /api/transactions/export) may hold.
API_EXPORT_MAX_ROWS = env.int("API_EXPORT_MAX_ROWS", default=100_000)
# Most stored transactions one POST /api/backtest replays (it answers when done).
API_BACKTEST_MAX_ROWS = env.int("API_BACKTEST_MAX_ROWS", default=50_000)
# Most one backtest job (POST /api/backtest/jobs, run by a Celery worker) replays.
API_BACKTEST_JOB_MAX_ROWS = env.int("API_BACKTEST_JOB_MAX_ROWS", default=1_000_000)
# A queued or running job without a progress write for this long is shown stale
# (its worker died, or no worker took it); it writes at least at each phase.
API_BACKTEST_JOB_STALE_SECONDS = env.int("API_BACKTEST_JOB_STALE_SECONDS", default=600)
# Backtest jobs one user may have queued or running at once (the backtest
# worker runs one at a time); another is a 429 until one ends or is cancelled.
API_BACKTEST_JOB_ACTIVE_PER_USER = env.int(
    "API_BACKTEST_JOB_ACTIVE_PER_USER", default=2, minimum=1
)

# Any case ("info" too); a level logging does not know stops start-up with a
# message instead of "Unable to configure root logger".
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").strip().upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; "
        f"got {LOG_LEVEL!r}."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"kafka": {"level": "WARNING"}},
}

# --- Live push (issue 3) --------------------------------------------------------
# The stream coalesces committed batches into at most one dashboard event per this
# many seconds (0.25 s = at most 4 events per second).
STREAM_PUSH_MIN_INTERVAL_SECONDS = env.float(
    "STREAM_PUSH_MIN_INTERVAL_SECONDS", default=0.25
)
