"""Rules: the stored rule set's starting point."""

from __future__ import annotations


def rules_seed_defaults() -> None:
    """Store every known rule with its default parameters, and the thresholds.

    Rows that exist are left as they are. The data migration did this once; tests
    that flush the database call it to start from the same state.
    """
    from detection.models import DecisionThresholds, Rule
    from detection.rules import RULE_TYPES

    for code, rule_type in RULE_TYPES.items():
        Rule.objects.get_or_create(
            code=code,
            defaults={
                "name": rule_type.name,
                "description": rule_type.description,
                "weight": rule_type.weight,
                "params": rule_type.params_defaults(),
                "enabled": rule_type.enabled_by_default,
            },
        )
    DecisionThresholds.objects.get_or_create(
        pk=1, defaults={"suspicious": 0.5, "fraud": 0.8}
    )
