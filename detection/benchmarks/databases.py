"""Throwaway databases for benchmarks, on the configured backend (SQLite or PostgreSQL).

A benchmark never touches the configured database itself: it makes scratch ones next
to it (SQLite files in a work folder, or databases on the same PostgreSQL server),
points this process and its consumer subprocesses at them, and drops them at the end.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

VENDORS = ("sqlite", "postgresql")


class ScratchDatabases:
    """Create, switch to, copy and drop scratch databases of one benchmark run."""

    def __init__(self, workdir: Path) -> None:
        if connection.vendor not in VENDORS:
            raise CommandError(
                f"Benchmarks run on SQLite or PostgreSQL, not {connection.vendor}."
            )
        self.vendor = connection.vendor
        self.workdir = workdir
        self.settings = dict(connection.settings_dict)
        self.run_id = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def name(self, label: str) -> str:
        """Return the database name (SQLite: file path) of a scratch database."""
        if self.vendor == "sqlite":
            return str(self.workdir / f"bench-{label}.sqlite3")
        return f"bench_{label}_{self.run_id}"

    def url(self, name: str) -> str:
        """Return a DATABASE_URL for a scratch database (for subprocesses)."""
        if self.vendor == "sqlite":
            return f"sqlite:///{name}"
        s = self.settings
        credentials = quote(s["USER"] or "", safe="")
        if s["PASSWORD"]:
            credentials += ":" + quote(s["PASSWORD"], safe="")
        host = s["HOST"] or "127.0.0.1"
        port = f":{s['PORT']}" if s["PORT"] else ""
        at = f"{credentials}@" if credentials else ""
        return f"postgres://{at}{host}{port}/{name}"

    def use(self, name: str) -> None:
        """Point this process's default connection at a database."""
        connection.close()
        # Assigning NAME on the live settings dict is how Django's own test runner
        # switches to a test database.
        connection.settings_dict["NAME"] = name

    def create(self, label: str) -> str:
        """Create an empty scratch database, migrate it, switch to it; return it."""
        name = self.name(label)
        if self.vendor == "postgresql":
            self._server(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        self.use(name)
        call_command("migrate", verbosity=0)
        return name

    def copy(self, source: str, label: str) -> str:
        """Return a new scratch database holding a copy of `source`."""
        name = self.name(label)
        connection.close()  # a copy needs the source quiet (and its WAL folded)
        if self.vendor == "sqlite":
            shutil.copyfile(source, name)
        else:
            self._server(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        """Drop every scratch database of this run."""
        connection.close()
        connection.settings_dict["NAME"] = self.settings["NAME"]
        for name in self.created:
            if self.vendor == "sqlite":
                for path in Path(name).parent.glob(Path(name).name + "*"):
                    path.unlink()
            else:
                self._server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()

    def _server(self, sql: str) -> None:
        """Run one statement on the PostgreSQL server (outside any database's
        transaction, as CREATE/DROP DATABASE need)."""
        import psycopg

        s = self.settings
        with psycopg.connect(
            dbname="postgres",
            user=s["USER"] or None,
            password=s["PASSWORD"] or None,
            host=s["HOST"] or None,
            port=s["PORT"] or None,
            autocommit=True,
        ) as server:
            server.execute(sql)
