"""Shared pytest fixtures: users, API clients; real services come from tests.services."""

import pytest

pytest_plugins = ["tests.services"]


@pytest.fixture
def staff_user(django_user_model):
    """Return a staff user (the analyst who inspects verdicts in admin)."""
    return django_user_model.objects.create_user(
        username="analyst", password="correct-horse-battery", is_staff=True,
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
