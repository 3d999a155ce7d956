"""Pytest fixtures: users, API clients, seeded rules (services: tests.services)."""

import pytest

pytest_plugins = ["tests.services"]


@pytest.fixture(autouse=True)
def _fresh_scoring_provider(monkeypatch):
    """Give each test its own process-wide scoring config (it caches for 2 s),
    and its own list and merchant caches (keyed on counters a rolled-back test
    database sets back, which production never does)."""
    from detection.lists import lists_cache_clear
    from detection.merchants import merchant_fraud_cache_clear

    monkeypatch.setattr("detection.scoring.config._provider", None)
    lists_cache_clear()
    merchant_fraud_cache_clear()


@pytest.fixture(autouse=True)
def _seeded_rules_after_flush(request):
    """Give transactional tests the rules the data migration seeds.

    pytest-django empties the database after each transactional test (it cannot
    roll back what consumer processes committed), which also deletes the rows the
    seed migration wrote; this puts them back so every test starts alike.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not (
        marker.kwargs.get("transaction") or "transactional_db" in request.fixturenames
    ):
        return
    request.getfixturevalue("transactional_db")
    from detection.services import rules_seed_defaults

    rules_seed_defaults()


@pytest.fixture
def staff_user(django_user_model):
    """Return a staff user (the analyst who inspects verdicts in admin)."""
    return django_user_model.objects.create_user(
        username="analyst",
        password="correct-horse-battery",
        is_staff=True,
        is_superuser=True,
    )


@pytest.fixture
def api_client(staff_user):
    """Return a DRF client logged in as the staff user."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def anon_client():
    """Return a DRF client with no credentials."""
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def viewer_client(django_user_model):
    """Return a DRF client signed in as a Viewer: reads, writes nothing."""
    from django.contrib.auth.models import Group
    from rest_framework.test import APIClient

    from detection.roles import ROLE_VIEWER

    viewer = django_user_model.objects.create_user(
        username="viewer", password="correct-horse-battery"
    )
    viewer.groups.add(Group.objects.get(name=ROLE_VIEWER))
    client = APIClient()
    client.force_authenticate(viewer)
    client.user = viewer
    return client
