"""Create the local admin login, or keep it: the password survives restarts."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


def password_file() -> Path:
    """Return where the generated password is kept (owner-readable only).

    Beside the SQLite file (one per database), or under var/ for a server
    database; `make clean` removes neither the database nor this file.
    """
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        path = Path(database["NAME"])
        return path.with_name(path.name + ".admin-password")
    return settings.VAR_DIR / f"admin-password-{database.get('NAME') or 'default'}"


class Command(BaseCommand):
    help = (
        "Create the superuser USERNAME with a random password (printed, and kept "
        "in a 0600 file beside the database so the next `make run` prints the "
        "same one). A password changed in admin is left alone. --reset makes a "
        "new one. Meant for `make run` on a developer machine."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="Login name.")
        parser.add_argument(
            "--reset", action="store_true", help="Give the user a new password."
        )

    def handle(self, *args, **options):
        user, created = get_user_model().objects.get_or_create(
            username=options["username"],
            defaults={"is_staff": True, "is_superuser": True},
        )
        path = password_file()
        kept = path.read_text().strip() if path.exists() else ""
        if not created and not options["reset"]:
            if kept and user.check_password(kept):
                self.stdout.write(f"Kept admin user {user.username!r}")
                self.stdout.write(f"password={kept}")
                return
            if user.has_usable_password():
                # Someone set their own password (admin, changepassword): keep it.
                self.stdout.write(
                    f"Admin user {user.username!r} has a password set by hand; "
                    "unchanged (`manage.py bootstrap_admin --reset` makes a new one)"
                )
                self.stdout.write("password=(yours)")
                return
        password = secrets.token_urlsafe(12)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
        verb = "Created" if created else "Reset password of"
        self.stdout.write(f"{verb} admin user {user.username!r}")
        self.stdout.write(f"password={password}")
