"""Model reasons say which of the payment's features were rare in training."""

from __future__ import annotations

import numpy as np
import pytest

from detection.explain import feature_quantiles, unusual_features
from detection.scoring import scoring_config_defaults, transaction_score_batch
from detection.state import FEATURE_NAMES, InMemoryStateStore
from tests.detection.test_rules import FixedPercentileModel, message

pytestmark = pytest.mark.django_db


def _training(rows: int = 5000) -> np.ndarray:
    """Return ordinary payments: amounts near the card's typical, daytime, few
    in 10 min, mostly known merchants (8% new)."""
    rng = np.random.default_rng(7)
    matrix = np.zeros((rows, len(FEATURE_NAMES)))
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    matrix[:, column["log_amount"]] = rng.normal(3.5, 0.6, rows)
    matrix[:, column["amount_zscore"]] = rng.normal(0, 1, rows)
    matrix[:, column["log_amount_ratio"]] = rng.normal(0, 0.4, rows)
    matrix[:, column["count_10m"]] = rng.poisson(0.2, rows)
    matrix[:, column["new_merchant"]] = rng.random(rows) < 0.08
    matrix[:, column["log_history_count"]] = np.log1p(rng.integers(20, 400, rows))
    matrix[:, column["log_seconds_since_prev"]] = rng.normal(10, 1, rows)
    return matrix


class ExplainedModel(FixedPercentileModel):
    def __init__(self, percentile, quantiles):
        super().__init__(percentile)
        self.feature_quantiles = quantiles


def test_a_model_flag_names_the_rarest_features_in_words():
    """Given a model trained on ordinary payments, when a card pays 40x its usual
    amount at a new merchant and the model flags it, then its reason names the
    amount against the card's typical first, with the share of training payments
    as extreme, and the values list them for the API."""
    quantiles = feature_quantiles(_training())
    store = InMemoryStateStore()
    config = scoring_config_defaults(model=ExplainedModel(0.999, quantiles))
    history = [message(f"h{i}", "25.00", i * 600, merchant_id="m-1") for i in range(30)]
    transaction_score_batch(history, store=store, config=config)
    (verdict,), _ = transaction_score_batch(
        [message("big", "1000.00", 30 * 600 + 60, merchant_id="m-new")],
        store=store,
        config=config,
    )
    (reason,) = [r for r in verdict.reasons if r["code"] == "model_anomaly"]
    unusual = reason["values"]["unusual"]
    assert unusual, reason
    assert unusual[0]["feature"] in {"log_amount_ratio", "amount_zscore", "log_amount"}
    assert unusual[0]["side"] == "high" and unusual[0]["share"] <= 0.001
    assert "; unusual: " in reason["detail"]
    assert "x the card's typical amount" in reason["detail"]
    assert "higher than any training payment" in reason["detail"]


def test_an_ordinary_payment_has_nothing_unusual_and_says_so():
    """A payment in the middle of every training distribution names no feature."""
    training = _training()
    quantiles = feature_quantiles(training)
    from detection.state import FeatureRow

    row = FeatureRow(
        epoch=0.0, amount=33.0, typical_amount=33.0, history_count=100,
        amount_zscore=0.0, distance_prev_km=None, speed_kmh=None,
        seconds_since_prev=22000.0, previous_location="", distance_home_km=None,
        count_10m=0, count_1h=0, count_24h=0, amount_24h=0.0, hour=0,
        new_country=False, new_merchant=False, recent_times=[],
    )  # fmt: skip
    vector = np.median(training, axis=0)
    assert unusual_features(vector, row, quantiles, base_currency="USD") == []


def _below_typical(training, *, typical: float, count: int, gap: float):
    """Return the row and model vector of a 1.10 payment on a card whose
    typical amount is `typical`, with `count` payments in 10 min before it and
    `gap` seconds since the last; its other features are training's medians."""
    from detection.state import FeatureRow

    row = FeatureRow(
        epoch=0.0, amount=1.10, typical_amount=typical, history_count=100,
        amount_zscore=-4.0, distance_prev_km=None, speed_kmh=None,
        seconds_since_prev=gap, previous_location="", distance_home_km=None,
        count_10m=count, count_1h=count, count_24h=count, amount_24h=0.0, hour=14,
        new_country=False, new_merchant=False, recent_times=[],
    )  # fmt: skip
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    vector = np.median(training, axis=0)
    vector[column["log_amount_ratio"]] = np.log(1.10 / typical)
    vector[column["count_10m"]] = count
    vector[column["log_seconds_since_prev"]] = np.log1p(gap)
    return row, vector


def test_small_amounts_counts_and_late_payments_read_right():
    """A payment far below the typical reads as a share of it (not "0.0x"),
    counts include the payment itself (as the rules' texts do), and a late
    payment's zero gap is not called unusual."""
    training = _training()
    quantiles = feature_quantiles(training)
    row, vector = _below_typical(training, typical=30.50, count=6, gap=0.0)
    texts = [
        item["text"]
        for item in unusual_features(vector, row, quantiles, base_currency="USD")
    ]
    assert any(t.startswith("4% of the card's typical amount") for t in texts), texts
    assert any(t.startswith("7 payments in 10 min") for t in texts), texts
    assert not any("after the card's previous payment" in t for t in texts), texts


@pytest.mark.parametrize(
    ("base", "typical"),
    [("USD", "(30.75 USD)"), ("JPY", "(31 JPY)"), ("KWD", "(30.750 KWD)")],
)
def test_amounts_in_the_base_currency_read_with_its_decimals(base, typical):
    """The card's typical amount in the explanation has the base currency's
    decimals: none for a yen base, three for a dinar one."""
    training = _training()
    row, vector = _below_typical(training, typical=30.75, count=0, gap=3600.0)
    found = unusual_features(
        vector, row, feature_quantiles(training), base_currency=base
    )
    texts = [item["text"] for item in found]
    assert any(f"typical amount {typical}" in t for t in texts), texts
