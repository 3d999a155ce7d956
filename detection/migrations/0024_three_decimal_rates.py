from django.conf import settings
from django.db import migrations

# Approximate units per US dollar (2025) of the currencies with three decimals
# that cards are charged in, so that their payments are scored from the first
# run, as the currencies of 0008 are: the Bahraini dinar, Omani rial and
# Jordanian dinar are pegged to the dollar; the Kuwaiti dinar follows a basket.
# A deployment updates them in admin (or from its treasury's feed).
USD_RATES = {"BHD": 0.376, "JOD": 0.709, "KWD": 0.307, "OMR": 0.3845}


def rates_seed(apps, schema_editor):
    """Store the rates when the base currency is the US dollar, leaving any
    rate already set (by an operator, in admin) as it is."""
    if settings.BASE_CURRENCY != "USD":
        return  # other bases start with their own currency alone (see 0008)
    ExchangeRate = apps.get_model("detection", "ExchangeRate")
    ExchangeRate.objects.bulk_create(
        [
            ExchangeRate(currency=code, units_per_base=rate)
            for code, rate in USD_RATES.items()
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("detection", "0023_backtest_job"),
    ]

    operations = [
        # Not undone: a rate an operator may have edited since is not ours to drop.
        migrations.RunPython(rates_seed, migrations.RunPython.noop),
    ]
