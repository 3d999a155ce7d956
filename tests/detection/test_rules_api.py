"""Rules and decision thresholds through the API: read by all, tuned by Risk admins."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry

from detection.models import DecisionThresholds, Rule
from detection.roles import ROLE_ANALYST, ROLE_RISK_ADMIN
from detection.rules import RULE_TYPES
from detection.scoring import scoring_config_from_db
from tests.detection.test_roles import _api, _member

pytestmark = pytest.mark.django_db


def _active(code: str):
    rules = scoring_config_from_db(model=None).rules
    return next((rule for rule in rules if rule.rule_type.code == code), None)


def test_every_rule_is_listed_with_what_its_parameters_mean(api_client):
    rules = api_client.get("/api/rules")
    assert rules.status_code == 200
    assert sorted(rule["code"] for rule in rules.json()) == sorted(RULE_TYPES)
    spike = api_client.get("/api/rules/amount_spike").json()
    assert spike["params_schema"]["min_history"] == {
        "help": RULE_TYPES["amount_spike"].params["min_history"].help,
        "minimum": 1.0,
        "maximum": 1000.0,
        "default": 5.0,
        "whole_number": True,
    }
    assert api_client.get("/api/rules/no_such_rule").status_code == 404
    assert api_client.get("/api/rules", {"code": "x"}).status_code == 400


def test_a_risk_admin_tunes_a_rule_and_scoring_takes_it_up(django_user_model):
    """PATCH merges the parameters given into the current ones, validated as in
    admin; the change is in the admin's log (old -> new) and the next config
    read scores with it."""
    api = _api(_member(django_user_model, ROLE_RISK_ADMIN))
    # A tuned parameter that the PATCH does not name stays as tuned.
    Rule.objects.filter(code="geo_velocity").update(
        params={"max_speed_kmh": 900.0, "min_distance_km": 50.0}
    )
    changed = api.patch(
        "/api/rules/geo_velocity",
        {"params": {"max_speed_kmh": 700}, "weight": 0.5},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["params"] == {"max_speed_kmh": 700, "min_distance_km": 50.0}
    active = _active("geo_velocity")
    assert active.params["max_speed_kmh"] == 700 and active.weight == 0.5
    log = LogEntry.objects.get(object_repr="geo_velocity")
    assert log.change_message.startswith("Changed through the API: ")
    assert "max_speed_kmh" in log.change_message and "0.5" in log.change_message
    # A PATCH that changes nothing is no entry in the log.
    same = api.patch("/api/rules/geo_velocity", {"weight": 0.5}, format="json")
    assert same.status_code == 200
    assert LogEntry.objects.filter(object_repr="geo_velocity").count() == 1

    assert (
        api.patch("/api/rules/geo_velocity", {"enabled": False}, format="json").json()[
            "enabled"
        ]
        is False
    )
    assert _active("geo_velocity") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"weight": 1.5}, "weight"),
        ({"params": {"bogus": 1}}, "params"),
        ({"params": {"threshold": "high"}}, "params"),
        ({"params": {"threshold": 0}}, "params"),
        ({"params": [1, 2]}, "params"),
    ],
)
def test_a_bad_rule_change_is_a_400_naming_the_field(api_client, body, field):
    before = Rule.objects.values().get(code="large_amount")
    refused = api_client.patch("/api/rules/large_amount", body, format="json")
    assert refused.status_code == 400
    assert field in refused.json()
    assert Rule.objects.values().get(code="large_amount") == before


def test_rules_are_read_by_all_and_changed_by_risk_admins_only(
    django_user_model, anon_client
):
    analyst = _api(_member(django_user_model, ROLE_ANALYST))
    assert analyst.get("/api/rules/huge_amount").status_code == 200
    patch = {"weight": 0.1}
    assert analyst.patch(
        "/api/rules/huge_amount", patch, format="json"
    ).status_code == (403)
    assert analyst.patch(
        "/api/thresholds", {"fraud": 0.9}, format="json"
    ).status_code == (403)
    assert anon_client.get("/api/rules").status_code == 401
    assert Rule.objects.get(code="huge_amount").weight != 0.1


def test_rules_are_neither_added_nor_deleted(api_client):
    """Rules are code: `enabled` switches one off, keeping its parameters."""
    assert api_client.post("/api/rules", {"code": "x"}, format="json").status_code == (
        405
    )
    assert api_client.delete("/api/rules/huge_amount").status_code == 405
    assert Rule.objects.filter(code="huge_amount").exists()


def test_thresholds_are_read_and_changed_in_order(api_client):
    assert api_client.get("/api/thresholds").json()["suspicious"] == 0.5
    for bad in ({"suspicious": 0.9}, {"fraud": 1.5}, {"suspicious": 0}):
        refused = api_client.patch("/api/thresholds", bad, format="json")
        assert refused.status_code == 400, bad
        assert refused.json() == {
            "non_field_errors": ["Need 0 < suspicious < fraud <= 1."]
        }
    changed = api_client.patch("/api/thresholds", {"suspicious": 0.4}, format="json")
    assert changed.status_code == 200
    assert changed.json()["suspicious"] == 0.4
    config = scoring_config_from_db(model=None)
    assert (config.suspicious_threshold, config.fraud_threshold) == (0.4, 0.8)
    assert DecisionThresholds.objects.count() == 1
    log = LogEntry.objects.get(object_repr__startswith="suspicious")
    assert "suspicious: 0.5 \u2192 0.4" in log.change_message
