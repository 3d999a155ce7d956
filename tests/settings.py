"""Settings for the test run: production settings plus a throwaway SECRET_KEY.

DEBUG stays off, as in production. Subprocesses that tests start (consumers, the
ASGI server) use `fraudsite.settings` with the environment the test gives them.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use")
# The test run's own live-update channel group: its verdicts must not reach the
# dashboard of a `make run` on this Redis. Processes the run starts (a live server
# on these settings) inherit the run's id, so they share its group.
os.environ["CHANNEL_LAYER_PREFIX"] = "test-" + os.environ.setdefault(
    "FRAUDSITE_TEST_RUN", str(os.getpid())
)

# Its API throttle counts too (the cache's key prefix).
os.environ["CACHE_KEY_PREFIX"] = os.environ["CHANNEL_LAYER_PREFIX"]

from fraudsite.settings import *  # noqa: F403

# Hashing passwords slowly protects real users; in tests it only costs time.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # One file per test run: concurrent runs (and their consumer subprocesses,
    # which are handed this path) never share or delete each other's database.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(VAR_DIR / f"test_transactions_{os.getpid()}.sqlite3")  # noqa: F405
    }

# Throttles are off for the suite (tests reuse user ids within one run's cache
# prefix); tests/test_throttling.py turns them on with its own rates.
API_THROTTLE_RATES = {"user": None, "anon": None}
