"""What made the model find a payment unusual, in words an analyst can check.

An Isolation Forest gives one number. Next to it, a flagged verdict's model reason
lists the payment's features that were rarest among the payments the model was
trained on: "31x the card's typical amount (only 0.1% of training payments as
high)", "a merchant new to the card (in 8% of training payments)". Each trained
model keeps its training features' quantiles (`ModelVersion.feature_quantiles`)
for this. It describes the payment against the training data, feature by
feature; the forest itself weighs features together, so this is the evidence to
read, not an exact attribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from detection.state import FEATURE_NAMES, FeatureRow
from transactions.messages import amount_places

# Quantile levels kept per feature: fine in the tails, where payments get flagged.
FEATURE_QUANTILE_GRID = np.array(
    [
        *(0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
        *(0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 1.0),
    ]
)
# A feature is named when at most this share of training payments were as
# extreme; at most this many are named, rarest first.
UNUSUAL_MAX_SHARE = 0.05
UNUSUAL_MAX_FEATURES = 3
# A yes/no feature (a new merchant) is named when at most this share had it.
BINARY_MAX_SHARE = 0.1

# Which extremes of a feature mean something to an analyst: a burst is a high
# count, a new card a low history; a low count or a mid-afternoon hour is not news.
_HIGH, _LOW, _BOTH = ("high",), ("low",), ("high", "low")
_BINARY = frozenset({"new_country", "new_merchant", "new_category"})


def _money(amount: float, base: str) -> str:
    """Return an amount in the base currency with its decimals (none for JPY)."""
    return f"{amount:,.{amount_places(base)}f} {base}"


def _ratio_text(amount: float, typical: float, base: str) -> str:
    if not typical:
        return "no typical amount yet"
    ratio = amount / typical
    share = f"{ratio:,.1f}x" if ratio >= 1 else f"{ratio:.0%} of"
    return f"{share} the card's typical amount ({_money(typical, base)})"


def _gap(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


@functools.cache
def _phrases(base: str) -> dict[str, tuple[tuple[str, ...], Callable]]:
    """Return, per feature, the meaningful sides and the words for a row."""
    return {
        "log_amount": (_BOTH, lambda r: f"amount {_money(r.amount, base)}"),
        "amount_zscore": (
            _BOTH,
            lambda r: (
                f"{r.amount_zscore:+.1f} standard deviations from the card's "
                "usual amount"
            ),
        ),
        "log_amount_ratio": (
            _BOTH,
            lambda r: _ratio_text(r.amount, r.typical_amount, base),
        ),
        # Measured from the card's last known place, as the travel rule does (a
        # payment judged fraud in between did not move the card).
        "log_distance_prev_km": (
            _HIGH,
            lambda r: (
                f"{r.distance_prev_km or 0:,.0f} km from the card's last known place"
            ),
        ),
        "log_speed_kmh": (
            _HIGH,
            lambda r: f"{r.speed_kmh or 0:,.0f} km/h from the card's last known place",
        ),
        "log_distance_home_km": (
            _HIGH,
            lambda r: f"{r.distance_home_km or 0:,.0f} km from the card's home",
        ),
        # The features count the card's other payments; the rules' texts count
        # this one too, and so do these.
        "count_10m": (_HIGH, lambda r: f"{r.count_10m + 1} payments in 10 min"),
        "count_1h": (_HIGH, lambda r: f"{r.count_1h + 1} payments in 1 h"),
        "count_24h": (_HIGH, lambda r: f"{r.count_24h + 1} payments in 24 h"),
        "log_amount_24h": (
            _HIGH,
            lambda r: f"{_money(r.amount_24h, base)} spent in 24 h",
        ),
        "hour_offpeak": (_HIGH, lambda r: f"at {r.hour:02d}:00 local time"),
        "new_country": (_HIGH, lambda r: "a country new to the card"),
        "new_merchant": (_HIGH, lambda r: "a merchant new to the card"),
        "new_category": (_HIGH, lambda r: "a kind of shop new to the card"),
        "log_seconds_since_prev": (
            _BOTH,
            lambda r: f"{_gap(r.seconds_since_prev)} after the card's previous payment",
        ),
        "log_history_count": (
            _LOW,
            lambda r: f"{r.history_count} earlier payments on the card",
        ),
        "channel_novelty": (
            _HIGH,
            lambda r: "a channel the card seldom uses",
        ),
    }


def feature_quantiles(matrix: np.ndarray) -> np.ndarray:
    """Return the training features' values at FEATURE_QUANTILE_GRID (a row per
    level, a column per feature)."""
    return np.quantile(matrix, FEATURE_QUANTILE_GRID, axis=0)


def _tail_shares(
    vector: np.ndarray, quantiles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return, per feature, (share of training at or above its value, share at or
    below it), read off the quantiles: conservative, never rarer than they show.
    One pass over all features (this runs for every named model reason)."""
    grid = FEATURE_QUANTILE_GRID[:, None]
    below = np.where(quantiles < vector, grid, -np.inf).max(axis=0)
    above = np.where(quantiles > vector, grid, np.inf).min(axis=0)
    share_high = np.where(np.isfinite(below), 1.0 - below, 1.0)
    share_low = np.where(np.isfinite(above), above, 1.0)
    return share_high, share_low


def _share_text(share: float) -> str:
    return f"{round(share * 100, 2):g}%"


def unusual_features(
    vector: np.ndarray, row: FeatureRow, quantiles: np.ndarray, *, base_currency: str
) -> list[dict]:
    """Return the payment's rarest features against the training data.

    Each is {"feature", "side" (high or low), "share" (of training payments as
    extreme), "text"}; at most UNUSUAL_MAX_FEATURES, rarest first, each with a
    share of at most UNUSUAL_MAX_SHARE (yes/no features: the share that had
    it, at most BINARY_MAX_SHARE).
    """
    highs, lows = _tail_shares(np.asarray(vector, dtype=np.float64), quantiles)
    if min(highs.min(), lows.min()) > BINARY_MAX_SHARE:
        return []
    phrases = _phrases(base_currency)
    found = []
    for index, name in enumerate(FEATURE_NAMES):
        sides, words = phrases[name]
        high, low = float(highs[index]), float(lows[index])
        options = [(high, "high")] if "high" in sides else []
        options += [(low, "low")] if "low" in sides else []
        for share, side in options:
            if name in _BINARY and float(vector[index]) < 0.5:
                continue
            if name == "log_seconds_since_prev" and row.seconds_since_prev <= 0:
                # 0 is also what a payment arriving after a later one of the
                # card reads (late records): no evidence either way.
                continue
            limit = BINARY_MAX_SHARE if name in _BINARY else UNUSUAL_MAX_SHARE
            if share <= limit:
                found.append((share, name, side, words(row)))
    found.sort(key=lambda item: item[0])
    unusual = []
    for share, name, side, text in found[:UNUSUAL_MAX_FEATURES]:
        if name in _BINARY:
            text += f" (in {_share_text(share)} of training payments)"
        elif share == 0:
            extreme = "higher" if side == "high" else "lower"
            text += f" ({extreme} than any training payment)"
        else:
            text += f" (only {_share_text(share)} of training payments as {side})"
        unusual.append(
            {"feature": name, "side": side, "share": round(share, 4), "text": text}
        )
    return unusual


def unusual_text(unusual: list[dict]) -> str:
    """Return the words the model reason adds for its unusual features."""
    if not unusual:
        return (
            "; no single feature stands out against training (an unusual combination)"
        )
    return "; unusual: " + "; ".join(item["text"] for item in unusual)
