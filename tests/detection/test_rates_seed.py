"""The exchange rates the migrations seed: currencies with three decimals too."""

import importlib

import pytest
from django.apps import apps

from detection.models import ExchangeRate

pytestmark = pytest.mark.django_db

seed_migration = importlib.import_module(
    "detection.migrations.0024_three_decimal_rates"
)


def test_the_dinars_and_rial_have_rates_from_the_start(api_client):
    """A payment in Kuwaiti, Bahraini or Jordanian dinars or Omani rials (three
    decimals) is scored from the first run, as one in euros or yen is, without
    a rate added in admin first."""
    rates = dict(ExchangeRate.objects.values_list("currency", "units_per_base"))
    assert {code: rates.get(code) for code in ("BHD", "JOD", "KWD", "OMR")} == (
        seed_migration.USD_RATES
    )
    payload = {"user_id": "gulf", "amount": "12.345", "currency": "KWD"}
    response = api_client.post("/api/predict", payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["amount_base"] == pytest.approx(12.345 / 0.307, abs=0.01)


def test_seeding_leaves_a_rate_an_operator_set():
    ExchangeRate.objects.filter(currency="KWD").update(units_per_base=0.31)
    ExchangeRate.objects.filter(currency="BHD").delete()
    seed_migration.rates_seed(apps, None)
    rates = dict(ExchangeRate.objects.values_list("currency", "units_per_base"))
    assert rates["KWD"] == 0.31 and rates["BHD"] == 0.376
