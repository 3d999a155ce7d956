"""The supervised model beside the Isolation Forest: it learns from labels.

The forest finds payments unlike a card's usual ones; it cannot learn that a
pattern it finds ordinary is how fraud looks here. Analysts' labels and
chargebacks say exactly that, so each retrain also fits a gradient-boosted
classifier (scikit-learn's HistGradientBoostingClassifier) on the same features,
with the latest label as the target. Transactions without a label count as
legitimate once they are older than MODEL_LABEL_MATURITY_SECONDS: by then a
fraud would have come back as a chargeback; younger ones are left out, so that
frauds not reported yet are not learned as legitimate. It is trained only with
at least MODEL_CLASSIFIER_MIN_LABELS confirmed frauds (and as many legitimate
payments), and its output, a probability of fraud, is the `learned_fraud`
rule's input (`detection.rules`).

This module deliberately avoids Django so that backtests and benchmarks can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score
from threadpoolctl import ThreadpoolController

CLASSIFIER_PARAMS = {"max_iter": 200, "learning_rate": 0.05, "random_state": 0}
# The share of the newest eligible rows held out to report the classifier's
# average precision on payments it did not see (it is then refitted on all).
HOLDOUT_SHARE = 0.2

# One controller for the process: building one inspects every loaded library (ms).
_THREADPOOLS = ThreadpoolController()


class TooFewLabels(ValueError):
    """Raise when there are too few confirmed frauds (or legit payments) to train."""


@dataclass(frozen=True)
class FraudClassifier:
    """A fitted classifier and what it was trained on."""

    model: HistGradientBoostingClassifier
    # JSON-ready: fraud and legit counts, held-out average precision.
    info: dict

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """Return each row's probability of fraud (0..1).

        On one thread: OpenMP's start-up cost on a small batch is larger than the
        work (a 500-row batch: 4.5 ms on one thread against 12 ms on two, a single
        row 0.8 ms against 3.5 ms, measured on this project's 2-core machine).
        """
        if not len(matrix):
            return np.empty(0)
        with _THREADPOOLS.limit(limits=1, user_api="openmp"):
            return self.model.predict_proba(matrix)[:, 1]


def classifier_train(
    matrix: np.ndarray, is_fraud: np.ndarray, *, min_labels: int
) -> FraudClassifier:
    """Fit the classifier on rows in event order with their truth.

    Its held-out average precision is measured first on the newest HOLDOUT_SHARE
    of the rows (a model fitted on the older rest), then it is fitted on all.
    Raise TooFewLabels below `min_labels` frauds or legitimate rows.
    """
    is_fraud = np.asarray(is_fraud, dtype=bool)
    frauds = int(is_fraud.sum())
    legits = int(len(is_fraud) - frauds)
    if min(frauds, legits) < min_labels:
        raise TooFewLabels(
            f"{frauds} confirmed frauds and {legits} legitimate payments to learn "
            f"from; {min_labels} of each are needed"
        )
    cut = int(len(matrix) * (1 - HOLDOUT_SHARE))
    held_out_ap = None
    held_out = is_fraud[cut:]
    if 0 < held_out.sum() < len(held_out) and 0 < is_fraud[:cut].sum() < cut:
        trial = HistGradientBoostingClassifier(**CLASSIFIER_PARAMS)
        trial.fit(matrix[:cut], is_fraud[:cut])
        held_out_ap = round(
            float(
                average_precision_score(
                    held_out, trial.predict_proba(matrix[cut:])[:, 1]
                )
            ),
            4,
        )
    model = HistGradientBoostingClassifier(**CLASSIFIER_PARAMS)
    model.fit(matrix, is_fraud)
    info = {
        "algorithm": "hist_gradient_boosting",
        "fraud": frauds,
        "legit": legits,
        "iterations": int(model.n_iter_),
        "held_out_rows": len(held_out),
        "held_out_fraud": int(held_out.sum()),
        "held_out_average_precision": held_out_ap,
    }
    return FraudClassifier(model=model, info=info)


def classifier_summary(info: dict) -> str:
    """Return what a classifier learned from, in words (admin, retrain output)."""
    if not info:
        return "none"
    text = f"{info['fraud']:,} frauds and {info['legit']:,} legitimate payments"
    if info.get("held_out_average_precision") is not None:
        text += (
            f"; average precision {info['held_out_average_precision']:.4f} on the "
            f"newest {info['held_out_rows']:,} ({info['held_out_fraud']:,} fraud), "
            "held out"
        )
    return text
