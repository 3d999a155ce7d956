"""`make run`'s admin login: created once, the same password on every start,
kept in an owner-only file; a password set by hand is left alone."""

import stat
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from detection.management.commands import bootstrap_admin

pytestmark = pytest.mark.django_db


@pytest.fixture
def kept_at(tmp_path, monkeypatch):
    monkeypatch.setattr(
        bootstrap_admin.settings, "DATABASES", {"default": _sqlite(tmp_path)}
    )
    return tmp_path / "db.sqlite3.admin-password"


def _sqlite(tmp_path) -> dict:
    """The database settings password_file reads (the test database stays)."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(tmp_path / "db.sqlite3"),
    }


def _run(*args) -> tuple[str, str]:
    out = StringIO()
    call_command("bootstrap_admin", *args, stdout=out)
    text = out.getvalue()
    return text, text.split("password=")[-1].strip()


def _signs_in(password: str) -> bool:
    return get_user_model().objects.get(username="admin").check_password(password)


def test_the_first_start_creates_the_login_and_keeps_it_private(kept_at):
    text, password = _run()
    assert "Created admin user 'admin'" in text
    assert len(password) >= 12 and _signs_in(password)
    assert kept_at.read_text().strip() == password
    assert stat.S_IMODE(kept_at.stat().st_mode) == 0o600
    assert get_user_model().objects.get(username="admin").is_superuser


def test_later_starts_print_the_same_password(kept_at):
    _, first = _run()
    text, again = _run()
    assert "Kept admin user" in text
    assert again == first and _signs_in(first)


def test_a_password_set_by_hand_is_left_alone(kept_at):
    _run()
    user = get_user_model().objects.get(username="admin")
    user.set_password("mine-and-only-mine")
    user.save()
    text, shown = _run()
    assert "set by hand; unchanged" in text and shown == "(yours)"
    assert _signs_in("mine-and-only-mine")


def test_reset_makes_a_new_password(kept_at):
    _, first = _run()
    text, second = _run("--reset")
    assert "Reset password of admin user" in text
    assert second != first and _signs_in(second) and not _signs_in(first)
    assert kept_at.read_text().strip() == second


def test_another_login_keeps_its_own_password_and_leaves_admins(kept_at):
    """A second login (`--username`) gets its own file: the admin password
    `make run` prints stays the admin's, and is still recognised as kept."""
    _, admin_password = _run()
    text, other = _run("--username", "analyst")
    assert "Created admin user 'analyst'" in text
    assert kept_at.read_text().strip() == admin_password
    kept_other = kept_at.with_name("db.sqlite3.admin-password-analyst")
    assert kept_other.read_text().strip() == other
    text, again = _run()
    assert "Kept admin user 'admin'" in text and again == admin_password
    assert _signs_in(admin_password)


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("", "This field cannot be blank."),
        ("   ", "This field cannot be blank."),
        ("no spaces", "Enter a valid username"),
        ("x" * 151, "at most 150 characters"),
    ],
)
def test_a_blank_or_invalid_username_is_refused(kept_at, username, message):
    """Nothing is created and no password file is written."""
    with pytest.raises(CommandError, match=message):
        _run("--username", username)
    assert not get_user_model().objects.exists()
    assert not list(kept_at.parent.glob("*password*"))
