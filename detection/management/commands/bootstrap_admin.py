"""Create (or reset) the local admin login with a freshly generated password."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the superuser USERNAME if missing and give it a new random password, "
        "printed once. Meant for `make run` on a developer machine."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="Login name.")

    def handle(self, *args, **options):
        password = secrets.token_urlsafe(12)
        user, created = get_user_model().objects.get_or_create(
            username=options["username"],
            defaults={"is_staff": True, "is_superuser": True},
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        verb = "Created" if created else "Reset password of"
        self.stdout.write(f"{verb} admin user {user.username!r}")
        self.stdout.write(f"password={password}")
