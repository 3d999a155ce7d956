"""The test database as a DATABASE_URL, for processes the tests start."""

from urllib.parse import quote

from django.db import connection


def subprocess_database_url() -> str:
    """Return a DATABASE_URL naming the database this test run uses.

    Consumers, workers and the ASGI server run in their own processes; they must
    write to the test database, whether SQLite (a file) or PostgreSQL.
    """
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        credentials = quote(settings["USER"] or "")
        if settings.get("PASSWORD"):
            credentials += ":" + quote(settings["PASSWORD"])
        host = settings["HOST"] or "127.0.0.1"
        port = settings["PORT"] or 5432
        return f"postgres://{credentials}@{host}:{port}/{settings['NAME']}"
    raise NotImplementedError(f"no URL for {connection.vendor}")


def sqlite_plan(sql: str, params=()) -> list[str]:
    """Return the steps of SQLite's query plan for `sql` (each step's detail)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return [row[-1] for row in cursor.fetchall()]
