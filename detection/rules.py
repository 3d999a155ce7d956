"""Rule logic. Parameters live in `Rule` rows; the code that applies them lives here.

Each rule type declares its parameters (type, bounds, default) so that admin can refuse
bad values with a clear message, and an `evaluate` function that returns a reason (the
values that made it fire) or None. Rule codes keep the predecessor's names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from detection.state import SPEED_MIN_SECONDS, FeatureRow

MODEL_ANOMALY = "model_anomaly"
LEARNED_FRAUD = "learned_fraud"
# Defaults of the learned_fraud rule (see the backtest figures in the README).
LEARNED_FRAUD_WEIGHT = 0.8
LEARNED_FRAUD_THRESHOLD = 0.5


@dataclass(frozen=True)
class Param:
    """One rule parameter: its type, inclusive bounds and default."""

    kind: type
    minimum: float
    maximum: float
    default: float
    help: str


@dataclass(frozen=True)
class RuleType:
    """A rule the code knows how to apply, with its parameter schema and defaults."""

    code: str
    name: str
    description: str
    weight: float
    params: dict[str, Param]
    evaluate: Callable[[FeatureRow, dict[str, Any], tuple | None], dict | None]
    # Whether a new deployment scores with it before anyone enables it in admin.
    enabled_by_default: bool = True

    def params_defaults(self) -> dict[str, Any]:
        """Return the default parameters."""
        return {key: spec.default for key, spec in self.params.items()}


class RuleParamsError(ValueError):
    """Raise when rule parameters do not fit the rule type (errors: key -> text)."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def rule_params_validate(code: str, params: Any) -> dict[str, Any]:
    """Return the params with defaults filled in, or raise RuleParamsError."""
    rule_type = RULE_TYPES.get(code)
    if rule_type is None:
        raise RuleParamsError({"code": f"Unknown rule code {code!r}."})
    if not isinstance(params, dict):
        raise RuleParamsError({"params": "Must be a JSON object."})
    errors: dict[str, str] = {}
    unknown = sorted(set(params) - set(rule_type.params))
    if unknown:
        errors["params"] = (
            f"Unknown parameter(s) {', '.join(unknown)}; "
            f"expected {', '.join(sorted(rule_type.params))}."
        )
    cleaned = rule_type.params_defaults()
    for key, spec in rule_type.params.items():
        if key not in params:
            continue
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors[key] = f"Must be a number ({spec.help})."
            continue
        # Integers are finite, however long (and isfinite would overflow on a
        # JSON integer of hundreds of digits): the range check below refuses them.
        if isinstance(value, float) and not math.isfinite(value):
            errors[key] = f"Must be a finite number ({spec.help})."
            continue
        if spec.kind is int and value != int(value):
            errors[key] = "Must be a whole number."
            continue
        if not spec.minimum <= value <= spec.maximum:
            errors[key] = (
                f"Must be between {spec.minimum:g} and {spec.maximum:g} ({spec.help})."
            )
            continue
        cleaned[key] = spec.kind(value)
    if (
        code == MODEL_ANOMALY
        and not errors
        and not cleaned["floor"] < cleaned["threshold"] <= cleaned["ceiling"]
    ):
        errors["threshold"] = "Need floor < threshold <= ceiling."
    if errors:
        raise RuleParamsError(errors)
    return cleaned


def _fmt(number: float) -> str:
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:,.2f}"


def _base() -> str:
    # Amounts in features are converted to the base currency (scoring.features), and
    # amount limits are in it: reasons name it, as a JPY charge was converted.
    return settings.BASE_CURRENCY


def _fmt_duration(seconds: float) -> str:
    # Speeds are computed over at least SPEED_MIN_SECONDS (rounding aside), so a
    # shorter real gap reads as "1 min or less", not as a made-up exact time.
    if seconds <= SPEED_MIN_SECONDS * (1 + 1e-9):
        return f"{SPEED_MIN_SECONDS / 60:g} min or less"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _amount_spike(row: FeatureRow, p: dict, _model: tuple | None) -> dict | None:
    if row.history_count < p["min_history"] or row.typical_amount <= 0:
        return None
    ratio = row.amount / row.typical_amount
    # The ratio alone flags every big spender's ordinary variation; requiring an
    # unusual amount for THIS user's spread (z-score of log amount) keeps precision.
    if ratio < p["multiplier"] or row.amount_zscore < p["min_zscore"]:
        return None
    return {
        "detail": (
            f"{_fmt(row.amount)} {_base()} is {ratio:.1f}x the user's typical "
            f"{_fmt(row.typical_amount)} {_base()} (limit {p['multiplier']:g}x)"
        ),
        "values": {
            "amount": round(row.amount, 2),
            "typical_amount": round(row.typical_amount, 2),
            "ratio": round(ratio, 2),
            "multiplier": p["multiplier"],
            "zscore": round(row.amount_zscore, 2),
        },
    }


def _amount_over(row: FeatureRow, p: dict, _model: tuple | None) -> dict | None:
    if row.amount < p["threshold"]:
        return None
    return {
        "detail": f"{_fmt(row.amount)} >= {_fmt(p['threshold'])} {_base()}",
        "values": {"amount": round(row.amount, 2), "threshold": p["threshold"]},
    }


def _geo_velocity(row: FeatureRow, p: dict, _model: tuple | None) -> dict | None:
    if row.speed_kmh is None or row.distance_prev_km is None:
        return None
    if (
        row.distance_prev_km < p["min_distance_km"]
        or row.speed_kmh <= p["max_speed_kmh"]
    ):
        return None
    # Coming back home fast after a far-away charge points at that charge, not at
    # this one: fire only for a transaction away from the card's home.
    if row.distance_home_km is not None and row.distance_home_km < p["min_distance_km"]:
        return None
    # The time the speed was computed over (since the last LOCATED transaction,
    # at least SPEED_MIN_SECONDS), not the gap to the previous transaction.
    hours = row.distance_prev_km / row.speed_kmh if row.speed_kmh else 0.0
    return {
        "detail": (
            f"{_fmt(row.distance_prev_km)} km in {_fmt_duration(hours * 3600)} = "
            f"{_fmt(row.speed_kmh)} km/h > {_fmt(p['max_speed_kmh'])} km/h"
        ),
        "values": {
            "distance_km": round(row.distance_prev_km, 1),
            "hours": round(hours, 3),
            "speed_kmh": round(row.speed_kmh, 1),
            "max_speed_kmh": p["max_speed_kmh"],
            "previous_location": row.previous_location,
        },
    }


def _high_velocity(row: FeatureRow, p: dict, _model: tuple | None) -> dict | None:
    window_seconds = p["window_minutes"] * 60
    # The row carries event times of the user's recent transactions; counting here
    # (not in features) lets an admin change the window without a new feature.
    count = 1 + sum(
        1 for moment in row.recent_times if abs(row.epoch - moment) <= window_seconds
    )
    if count < p["max_count"]:
        return None
    return {
        "detail": (
            f"{count} transactions in {p['window_minutes']:g} min "
            f"(fires at {p['max_count']})"
        ),
        "values": {
            "count": count,
            "window_minutes": p["window_minutes"],
            "max_count": p["max_count"],
        },
    }


def _merchant_fraud(row: FeatureRow, p: dict, _model: tuple | None) -> dict | None:
    count = row.merchant_confirmed_fraud
    if count < p["min_confirmed"]:
        return None
    return {
        "detail": (
            f"merchant {row.merchant_id}: {count} transactions confirmed as fraud "
            f"in the last {p['days']:g} days (the rule fires from "
            f"{p['min_confirmed']})"
        ),
        "values": {
            "merchant_id": row.merchant_id,
            "confirmed_fraud": count,
            "min_confirmed": p["min_confirmed"],
            "days": p["days"],
        },
    }


def _learned_fraud(row: FeatureRow, p: dict, _model: tuple | None) -> dict | None:
    # The scorer adds weight * probability to the risk whether or not this
    # fires (scoring.verdicts._risk); from the threshold on it is a reason on its own.
    probability = row.fraud_probability
    if probability is None or probability < p["threshold"]:
        return None
    return learned_reason(probability, p)


def learned_reason(probability: float, p: dict) -> dict:
    """Return the classifier's reason entry for its probability of fraud."""
    return {
        "detail": (
            f"the classifier trained on confirmed fraud and legitimate payments "
            f"gives it a {probability:.1%} probability of fraud (a reason on its "
            f"own from {percent_text(p['threshold'])})"
        ),
        "values": {
            "probability": round(probability, 4),
            "threshold": p["threshold"],
        },
    }


def _model_anomaly(_row: FeatureRow, p: dict, model: tuple | None) -> dict | None:
    # `model` is (anomaly score, its percentile among the training transactions).
    # Thresholds are percentiles: raw Isolation Forest scores shift from one data
    # set to the next, "rarer than 99.5% of what we trained on" does not.
    if model is None or model[1] < p["threshold"]:
        return None
    return model_reason(model, p)


def percent_text(fraction: float) -> str:
    """Return a fraction as a percentage with the decimals it has (99.95%, 90%):
    a fixed one decimal showed a ceiling of 0.9995 as 100.0%."""
    return f"{round(fraction * 100, 4):g}%"


def model_reason(model: tuple[float, float], p: dict) -> dict:
    """Return the model's reason entry for (anomaly score, training percentile).

    The scoring core also names the model when it was below its own threshold but
    its added risk helped flag the transaction: a flagged verdict never lacks one.
    """
    score, percentile = model
    return {
        "detail": (
            f"anomaly score {score:.3f}, more unusual than {percentile:.2%} of "
            f"training transactions (the model adds risk from "
            f"{percent_text(p['floor'])} up, its full weight from "
            f"{percent_text(p['ceiling'])})"
        ),
        "values": {
            "model_score": round(score, 4),
            "percentile": round(percentile, 5),
            "threshold": p["threshold"],
        },
    }


RULE_TYPES: dict[str, RuleType] = {
    rule.code: rule
    for rule in (
        RuleType(
            code="amount_spike",
            name="Amount spike",
            description="Amount far above the user's typical amount.",
            weight=0.45,
            params={
                "multiplier": Param(float, 1.5, 1000, 5.0, "times the typical amount"),
                "min_history": Param(int, 1, 1000, 5, "transactions before it applies"),
                "min_zscore": Param(float, 0, 100, 2.0, "z-score of log amount"),
            },
            evaluate=_amount_spike,
        ),
        RuleType(
            code="large_amount",
            name="Large amount",
            description="Amount at or above a fixed limit.",
            weight=0.25,
            params={"threshold": Param(float, 0.01, 1e9, 2000.0, "amount")},
            evaluate=_amount_over,
        ),
        RuleType(
            code="huge_amount",
            name="Huge amount",
            description="Amount at or above a very high fixed limit.",
            weight=0.7,
            params={"threshold": Param(float, 0.01, 1e9, 10000.0, "amount")},
            evaluate=_amount_over,
        ),
        RuleType(
            code="geo_velocity",
            name="Impossible travel",
            description="Implied travel speed since the previous transaction too high.",
            weight=0.75,
            params={
                "max_speed_kmh": Param(float, 10, 50000, 900.0, "km/h"),
                "min_distance_km": Param(float, 0, 20000, 100.0, "km"),
            },
            evaluate=_geo_velocity,
        ),
        RuleType(
            code="high_velocity",
            name="Velocity burst",
            description="Many transactions by one user within a short window.",
            weight=0.5,
            params={
                "max_count": Param(int, 2, 10000, 5, "transactions"),
                "window_minutes": Param(float, 1, 1440, 10.0, "minutes"),
            },
            evaluate=_high_velocity,
        ),
        RuleType(
            code="merchant_fraud",
            name="Merchant with confirmed fraud",
            description=(
                "Merchant where analysts or chargebacks confirmed fraud lately (a "
                "compromised or fraudulent shop)."
            ),
            weight=0.5,
            params={
                "min_confirmed": Param(
                    int, 1, 10000, 3, "confirmed frauds at the merchant"
                ),
                "days": Param(float, 1, 365, 14.0, "days back that fraud labels count"),
            },
            evaluate=_merchant_fraud,
            # A count, not a rate: at a very busy merchant three chargebacks in
            # two weeks would flag everything. Enabled by an admin who has set
            # min_confirmed for the volume of their merchants.
            enabled_by_default=False,
        ),
        RuleType(
            code=LEARNED_FRAUD,
            name="Learned fraud pattern",
            description=(
                "A classifier trained on analysts' labels and chargebacks finds the "
                "payment like confirmed fraud (silent until a retrain had enough "
                "labels: detection.classifier)."
            ),
            weight=LEARNED_FRAUD_WEIGHT,
            params={
                "threshold": Param(
                    float, 0.01, 1, LEARNED_FRAUD_THRESHOLD, "probability of fraud"
                ),
            },
            evaluate=_learned_fraud,
        ),
        RuleType(
            code=MODEL_ANOMALY,
            name="Model anomaly",
            description="Isolation Forest anomaly score over the user's behaviour.",
            weight=0.7,
            params={
                # How many transactions the model flags is set by floor, ceiling
                # and weight against the decision thresholds, not by `threshold`.
                "threshold": Param(
                    float,
                    0,
                    1,
                    0.995,
                    "training percentile from which the model is named a reason "
                    "on its own (below it, it is named only when its risk helped "
                    "flag); it does not change the risk",
                ),
                # 0.95 (was 0.9): on the backtest of seeds 1 and 2 it halves the
                # flags (3.0% -> 1.6%, 3.2% -> 1.8% of payments) and raises their
                # precision (0.26 -> 0.45, 0.34 -> 0.50) for 5-7 points of recall.
                "floor": Param(
                    float, 0, 1, 0.95, "percentile where the model starts to add risk"
                ),
                "ceiling": Param(
                    float,
                    0,
                    1,
                    0.999,
                    "percentile where it adds its full weight (with the defaults, "
                    "weight 0.7 and suspicious at 0.5, the model alone flags from "
                    "about the 98.5th percentile)",
                ),
            },
            evaluate=_model_anomaly,
        ),
    )
}
