"""Sign-in lockout (django-axes): repeated wrong passwords lock that username from
that address, at the dashboard's and the admin's sign-in, and are listed in admin."""

import pytest
from axes.models import AccessAttempt
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture
def analyst(django_user_model):
    return django_user_model.objects.create_user(
        username="analyst", password=PASSWORD, is_staff=True
    )


def _sign_in(client, url, username, password):
    return client.post(url, {"username": username, "password": password})


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
@override_settings(AXES_FAILURE_LIMIT=3)
def test_wrong_passwords_lock_the_username_even_for_the_right_one(analyst, url):
    client = Client()
    codes = [_sign_in(client, url, "analyst", "guess").status_code for _ in range(3)]
    assert codes[:2] == [200, 200]  # the form again, with its error
    assert codes[2] == 429
    locked = _sign_in(client, url, "analyst", PASSWORD)
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Sign-in locked" in page and "for 15 minutes" in page
    assert "<strong>analyst</strong>" in page
    assert "_auth_user_id" not in client.session
    attempt = AccessAttempt.objects.get(username="analyst")
    # The right password during a lockout counts as one more failed attempt.
    assert attempt.failures_since_start == 4


@override_settings(AXES_FAILURE_LIMIT=3)
def test_a_lockout_is_per_username_and_a_success_resets_the_count(
    analyst, django_user_model
):
    django_user_model.objects.create_user(username="other", password=PASSWORD)
    client = Client()
    for _ in range(2):
        _sign_in(client, "/accounts/login/", "analyst", "guess")
    signed_in = _sign_in(client, "/accounts/login/", "analyst", PASSWORD)
    assert signed_in.status_code == 302
    assert not AccessAttempt.objects.filter(username="analyst").exists()

    for _ in range(3):
        _sign_in(Client(), "/accounts/login/", "other", "guess")
    url = "/accounts/login/"
    assert _sign_in(Client(), url, "other", PASSWORD).status_code == 429
    assert _sign_in(Client(), url, "analyst", PASSWORD).status_code == 302


def test_the_admin_lists_attempts_for_an_admin_to_lift(analyst, admin_client):
    _sign_in(Client(), "/admin/login/", "analyst", "guess")
    page = admin_client.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert b"analyst" in page.content


@override_settings(AXES_FAILURE_LIMIT=3)
def test_behind_a_proxy_the_lockout_is_per_client_not_per_proxy(analyst, settings):
    """Behind one proxy (NUM_PROXIES=1) every request comes from the proxy's
    address: the lockout keys on the address the proxy forwarded, so a guesser
    does not lock the real user out."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    guesser = Client(HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="10.0.0.1")
    for _ in range(3):
        _sign_in(guesser, "/accounts/login/", "analyst", "guess")
    assert _sign_in(guesser, "/accounts/login/", "analyst", PASSWORD).status_code == 429
    owner = Client(HTTP_X_FORWARDED_FOR="198.51.100.7", REMOTE_ADDR="10.0.0.1")
    assert _sign_in(owner, "/accounts/login/", "analyst", PASSWORD).status_code == 302
