"""Raise the model's default floor from the 90th to the 95th training percentile.

Only where the model_anomaly rule still has the old defaults: a deployment that
tuned it keeps its own values. See detection.rules for the measured effect.
"""

from django.db import migrations

OLD = {"threshold": 0.995, "floor": 0.9, "ceiling": 0.999}
NEW = {"threshold": 0.995, "floor": 0.95, "ceiling": 0.999}


def _swap(apps, before: dict, after: dict) -> None:
    Rule = apps.get_model("detection", "Rule")
    for rule in Rule.objects.filter(code="model_anomaly"):
        if rule.params == before:
            rule.params = after
            rule.save(update_fields=["params"])


def forwards(apps, schema_editor):
    _swap(apps, OLD, NEW)


def backwards(apps, schema_editor):
    _swap(apps, NEW, OLD)


class Migration(migrations.Migration):
    dependencies = [("detection", "0017_model_feature_quantiles")]

    operations = [migrations.RunPython(forwards, backwards)]
