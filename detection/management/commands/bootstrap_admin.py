"""Create the local admin login, or keep it: the password survives restarts."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError


def password_file(username: str = "admin") -> Path:
    """Return where a login's generated password is kept (owner-readable only).

    Beside the SQLite file (one per database and login), or under var/ for a
    server database; `make clean` removes neither the database nor this file.
    The `admin` login's file has no name in it (as before other logins could be
    made): `make run` prints the password it holds.
    """
    login = "" if username == "admin" else f"-{username}"
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        path = Path(database["NAME"])
        return path.with_name(f"{path.name}.admin-password{login}")
    name = database.get("NAME") or "default"
    return settings.VAR_DIR / f"admin-password-{name}{login}"


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
        model = get_user_model()
        try:
            # Blank, too long or with characters a login may not have.
            username = model._meta.get_field(model.USERNAME_FIELD).clean(
                options["username"].strip(), None
            )
        except ValidationError as error:
            raise CommandError(f"--username: {' '.join(error.messages)}") from None
        user, created = model.objects.get_or_create(
            username=username,
            defaults={"is_staff": True, "is_superuser": True},
        )
        path = password_file(username)
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
