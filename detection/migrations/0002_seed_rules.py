"""Seed the predecessor's rules and the decision thresholds with their defaults."""

from django.db import migrations

# Frozen copy of the defaults at the time of this migration: later code changes to
# `detection.rules` must not rewrite history that already ran.
RULES = [
    (
        "amount_spike",
        "Amount spike",
        "Amount far above the user's typical amount.",
        0.45,
        {"multiplier": 5.0, "min_history": 5, "min_zscore": 2.0},
    ),
    (
        "large_amount",
        "Large amount",
        "Amount at or above a fixed limit.",
        0.25,
        {"threshold": 2000.0},
    ),
    (
        "huge_amount",
        "Huge amount",
        "Amount at or above a very high fixed limit.",
        0.7,
        {"threshold": 10000.0},
    ),
    (
        "geo_velocity",
        "Impossible travel",
        "Implied travel speed since the previous transaction too high.",
        0.75,
        {"max_speed_kmh": 900.0, "min_distance_km": 100.0},
    ),
    (
        "high_velocity",
        "Velocity burst",
        "Many transactions by one user within a short window.",
        0.5,
        {"max_count": 5, "window_minutes": 10.0},
    ),
    (
        "model_anomaly",
        "Model anomaly",
        "Isolation Forest anomaly score over the user's behaviour.",
        0.7,
        {"threshold": 0.995, "floor": 0.9, "ceiling": 0.999},
    ),
]


def seed(apps, schema_editor):
    Rule = apps.get_model("detection", "Rule")
    DecisionThresholds = apps.get_model("detection", "DecisionThresholds")
    for code, name, description, weight, params in RULES:
        Rule.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "description": description,
                "weight": weight,
                "params": params,
                "enabled": True,
            },
        )
    DecisionThresholds.objects.get_or_create(
        pk=1, defaults={"suspicious": 0.5, "fraud": 0.8}
    )


def unseed(apps, schema_editor):
    apps.get_model("detection", "Rule").objects.filter(
        code__in=[code for code, *_ in RULES]
    ).delete()
    apps.get_model("detection", "DecisionThresholds").objects.filter(pk=1).delete()


class Migration(migrations.Migration):
    dependencies = [("detection", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
