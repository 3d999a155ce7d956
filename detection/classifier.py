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

from dataclasses import dataclass, field
from datetime import datetime

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


# Below this many rows the packed evaluation is faster than scikit-learn's, whose
# per-tree calls cost about 0.7 ms whatever the rows (measured on this project's
# 2-core machine, 111 trees: 1 row 0.08 ms against 0.73, 20 rows 0.40 against
# 0.79, 50 rows 0.85 against 0.90, 100 rows 1.6 against 1.1).
PACKED_MAX_ROWS = 48


class PackedBoosting:
    """The fitted trees of a binary HistGradientBoostingClassifier in flat arrays.

    The scoring core calls the classifier once per wave of a micro-batch
    (`scoring.verdicts_score`), and most waves are a few rows: there,
    scikit-learn's loop of one call per tree costs more than the work. This
    walks every tree at once, one depth level per step (as `detection.forest`
    does for the Isolation Forest), with scikit-learn's comparison (a row goes
    left when its value is <= the node's threshold); leaves point at themselves,
    so a row that reached one stays. Its probabilities equal `predict_proba`'s
    within 1e-12 (tests); it reads the fitted model's `_predictors` and
    `_baseline_prediction`, and `pack` returns None for anything it does not
    handle (categorical splits, more than one tree per round), which then goes
    to scikit-learn.
    """

    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        trees = [round_[0].nodes for round_ in model._predictors]
        sizes = np.array([len(nodes) for nodes in trees])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nodes = np.concatenate(trees)
        offsets = np.repeat(starts, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(len(nodes))
        self.feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
        self.threshold = np.where(leaf, np.inf, nodes["num_threshold"])
        self.left = np.where(leaf, own, nodes["left"] + offsets).astype(np.intp)
        self.right = np.where(leaf, own, nodes["right"] + offsets).astype(np.intp)
        self.value = nodes["value"].astype(np.float64)
        self.roots = starts.astype(np.intp)
        self.depth = int(max(int(tree["depth"].max()) for tree in trees))
        self.baseline = float(np.asarray(model._baseline_prediction).ravel()[0])

    @classmethod
    def pack(cls, model: HistGradientBoostingClassifier) -> PackedBoosting | None:
        """Return the packed trees, or None when the model has parts it cannot
        evaluate (then scikit-learn scores every call)."""
        try:
            if model.n_trees_per_iteration_ != 1:
                return None
            if any(
                round_[0].nodes["is_categorical"].any() for round_ in model._predictors
            ):
                return None
            return cls(model)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return None

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """Return each row's probability of fraud (rows without NaN)."""
        node = np.broadcast_to(self.roots, (len(matrix), len(self.roots))).copy()
        rows = np.arange(len(matrix))[:, None]
        for _ in range(self.depth):
            left = matrix[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(left, self.left[node], self.right[node])
        raw = self.baseline + self.value[node].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


@dataclass(frozen=True)
class FraudClassifier:
    """A fitted classifier and what it was trained on."""

    model: HistGradientBoostingClassifier
    # JSON-ready: fraud and legit counts, held-out average precision, and the
    # newest payment it learned from (`trained_until`).
    info: dict
    packed: PackedBoosting | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.packed is None:
            object.__setattr__(self, "packed", PackedBoosting.pack(self.model))

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """Return each row's probability of fraud (0..1).

        A few rows (most of a micro-batch's waves) go through the packed trees;
        more, or any NaN, through scikit-learn on one thread: OpenMP's start-up
        cost on a batch this small is larger than the work (500 rows: 4.5 ms on
        one thread against 12 ms on two, measured on this 2-core machine).
        """
        if not len(matrix):
            return np.empty(0)
        if (
            self.packed is not None
            and len(matrix) < PACKED_MAX_ROWS
            and not np.isnan(matrix).any()
        ):
            return self.packed.probabilities(matrix)
        with _THREADPOOLS.limit(limits=1, user_api="openmp"):
            return self.model.predict_proba(matrix)[:, 1]


def classifier_train(
    matrix: np.ndarray,
    is_fraud: np.ndarray,
    *,
    min_labels: int,
    trained_until: datetime | None = None,
) -> FraudClassifier:
    """Fit the classifier on rows in event order with their truth.

    Its held-out average precision is measured first on the newest HOLDOUT_SHARE
    of the rows (a model fitted on the older rest), then it is fitted on all.
    `trained_until` (the newest row's event time) is kept in its info, so that a
    later retrain knows which payments it never saw. Raise TooFewLabels below
    `min_labels` frauds or legitimate rows.
    """
    is_fraud = np.asarray(is_fraud, dtype=bool)
    frauds = int(is_fraud.sum())
    legits = int(len(is_fraud) - frauds)
    # Both classes, whatever the setting: fitted on one, predict_proba's second
    # column would not be "fraud".
    if min(frauds, legits) < max(min_labels, 1):
        raise TooFewLabels(
            f"{frauds} confirmed frauds and {legits} legitimate payments to learn "
            f"from; {max(min_labels, 1)} of each are needed"
        )
    cut = int(len(matrix) * (1 - HOLDOUT_SHARE))
    held_out_ap = None
    held_out = is_fraud[cut:]
    if 0 < held_out.sum() < len(held_out) and 0 < is_fraud[:cut].sum() < cut:
        trial = classifier_fit(matrix[:cut], is_fraud[:cut])
        held_out_ap = round(
            float(
                average_precision_score(
                    held_out, trial.predict_proba(matrix[cut:])[:, 1]
                )
            ),
            4,
        )
    model = classifier_fit(matrix, is_fraud)
    info = {
        "algorithm": "hist_gradient_boosting",
        "fraud": frauds,
        "legit": legits,
        "iterations": int(model.n_iter_),
        "held_out_rows": len(held_out),
        "held_out_fraud": int(held_out.sum()),
        "held_out_average_precision": held_out_ap,
        "trained_until": None if trained_until is None else trained_until.isoformat(),
    }
    return FraudClassifier(model=model, info=info)


def classifier_fit(
    matrix: np.ndarray, is_fraud: np.ndarray
) -> HistGradientBoostingClassifier:
    """Return the classifier fitted on rows with both classes (CLASSIFIER_PARAMS:
    the same model whether it is kept, held out or compared)."""
    return HistGradientBoostingClassifier(**CLASSIFIER_PARAMS).fit(matrix, is_fraud)


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
