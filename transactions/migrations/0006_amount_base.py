from django.conf import settings
from django.db import migrations, models
from django.db.models import FloatField, Value
from django.db.models.functions import Cast


def amounts_in_base(apps, schema_editor):
    """Fill amount_base for stored transactions with today's rates.

    Base-currency rows are their own amount. The others are converted with the
    stored exchange rates (rows of a currency without one keep their own
    amount: the scorers refused such currencies, so none should exist).
    """
    Transaction = apps.get_model("transactions", "Transaction")
    ExchangeRate = apps.get_model("detection", "ExchangeRate")
    amount = Cast("amount", FloatField())
    Transaction.objects.update(amount_base=amount)
    for currency, rate in ExchangeRate.objects.values_list(
        "currency", "units_per_base"
    ):
        if currency != settings.BASE_CURRENCY:
            Transaction.objects.filter(currency=currency).update(
                amount_base=amount / Value(rate, output_field=FloatField())
            )


class Migration(migrations.Migration):
    dependencies = [
        ("transactions", "0005_profile_learned"),
        ("detection", "0011_exchange_rate_bounds"),
    ]

    operations = [
        migrations.AddField(
            model_name="transaction",
            name="amount_base",
            field=models.FloatField(
                default=0.0,
                help_text="The amount in BASE_CURRENCY at the rate it was scored with.",
            ),
            preserve_default=False,
        ),
        migrations.RunPython(amounts_in_base, migrations.RunPython.noop),
    ]
