"""Score transactions with a fitted Isolation Forest quickly, one row at a time.

scikit-learn's ``IsolationForest.score_samples`` spends about 12 ms per call on
input validation and a per-tree Python loop, which is far too slow for an API
that scores a single transaction per request. ``PackedForest`` copies the
fitted trees into a handful of flat numpy arrays and walks every tree at once,
one depth level per step, so a call costs a few dozen small numpy operations
whatever the number of trees.

The scores reproduce scikit-learn's arithmetic step by step (float32 input,
per-leaf ``depth + c(n) - 1`` values, tree-ordered summation, the
``2 ** (-depths / (n_trees * c(max_samples_)))`` formula), so they agree with
``IsolationForest.score_samples`` to the last bit in practice.

This module deliberately avoids Django so it can be used from workers, notebooks
and benchmarks alike.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray
    from sklearn.ensemble import IsolationForest

__all__ = ["PackedForest", "average_path_length", "forest_bench"]

# scikit-learn marks leaves with this child index (sklearn.tree._tree.TREE_LEAF).
_TREE_LEAF = -1


def average_path_length(n_samples: ArrayLike) -> NDArray[np.float64]:
    """Return c(n), the average path length of an unsuccessful BST search.

    This mirrors ``sklearn.ensemble._iforest._average_path_length`` operation
    for operation, because a different but mathematically equal formula could
    round differently and break bit-for-bit agreement with scikit-learn.
    """
    n = np.asarray(n_samples)
    shape = n.shape
    n = n.reshape(1, -1)
    out = np.zeros(n.shape)
    mask_1 = n <= 1
    mask_2 = n == 2
    not_mask = ~np.logical_or(mask_1, mask_2)
    out[mask_1] = 0.0
    out[mask_2] = 1.0
    out[not_mask] = (
        2.0 * (np.log(n[not_mask] - 1.0) + np.euler_gamma)
        - 2.0 * (n[not_mask] - 1.0) / n[not_mask]
    )
    return out.reshape(shape)


def _float32_upper_bounds(threshold: NDArray[np.float64]) -> NDArray[np.float32]:
    """Return, per threshold, the largest float32 that is <= the float64 value.

    scikit-learn compares ``float32(x) <= threshold`` with a float64 threshold.
    For any float32 ``x`` that is the same as ``x <= t32`` where ``t32`` is the
    largest float32 not above the threshold, which lets the hot loop compare
    float32 against float32 (half the memory traffic, no dtype promotion).
    """
    with np.errstate(over="ignore"):
        t32 = threshold.astype(np.float32)
    # Rounding to nearest may have gone above the threshold: step down one ulp.
    too_big = t32.astype(np.float64) > threshold
    t32[too_big] = np.nextafter(t32[too_big], np.float32(-np.inf))
    return t32


class PackedForest:
    """A fitted Isolation Forest packed into flat arrays for fast scoring.

    Build one with :meth:`from_isolation_forest`. Nodes of all trees live in
    one set of arrays; tree ``i`` starts at ``tree_offsets_[i]``. Leaves point
    to themselves, so walking a fixed number of levels leaves every row at its
    leaf without tracking which trees have finished.
    """

    n_features_in_: int
    n_estimators_: int
    max_samples_: int
    n_levels_: int
    tree_offsets_: NDArray[np.intp]

    def __init__(
        self,
        *,
        feature: NDArray[np.intp],
        threshold: NDArray[np.float64],
        children: NDArray[np.intp],
        missing_go_to_right: NDArray[np.bool_],
        leaf_value: NDArray[np.float64],
        tree_offsets: NDArray[np.intp],
        n_levels: int,
        n_features_in: int,
        max_samples: int,
    ) -> None:
        """Store packed arrays; prefer :meth:`from_isolation_forest`.

        ``children`` has two entries per node (left, right) in global node
        indices; ``feature`` holds global feature indices; ``leaf_value`` is the
        per-tree depth contribution ``depth + c(n_node_samples) - 1`` exactly as
        scikit-learn computes it (scikit-learn's depths count the root as 1).
        """
        self.n_features_in_ = int(n_features_in)
        self.n_estimators_ = len(tree_offsets)
        self.max_samples_ = int(max_samples)
        self.n_levels_ = int(n_levels)
        self.tree_offsets_ = np.asarray(tree_offsets, dtype=np.intp)

        self._feature = np.ascontiguousarray(feature, dtype=np.intp)
        self._threshold = np.ascontiguousarray(threshold, dtype=np.float64)
        self._threshold32 = _float32_upper_bounds(self._threshold)
        self._children = np.ascontiguousarray(children, dtype=np.intp).reshape(-1)
        self._missing_go_to_right = np.ascontiguousarray(
            missing_go_to_right, dtype=np.intp
        )
        self._leaf_value = np.ascontiguousarray(leaf_value, dtype=np.float64)
        self._roots = self.tree_offsets_.copy()

        # Same expression as IsolationForest._compute_score_samples.
        self._denominator = self.n_estimators_ * average_path_length(
            [self.max_samples_]
        )

    @classmethod
    def from_isolation_forest(cls, model: IsolationForest) -> PackedForest:
        """Pack the trees of a fitted ``sklearn.ensemble.IsolationForest``."""
        estimators = getattr(model, "estimators_", None)
        if not estimators:
            raise ValueError("The IsolationForest must be fitted before packing.")

        features, thresholds, children, missing_right, values = [], [], [], [], []
        offsets: list[int] = []
        n_levels = 0
        offset = 0
        for estimator, feature_map in zip(
            estimators, model.estimators_features_, strict=True
        ):
            tree = estimator.tree_
            n_nodes = int(tree.node_count)
            node_ids = np.arange(n_nodes, dtype=np.intp)
            left = tree.children_left.astype(np.intp)
            right = tree.children_right.astype(np.intp)
            is_leaf = left == _TREE_LEAF
            feature_map = np.asarray(feature_map, dtype=np.intp)

            # Leaves loop back to themselves (feature 0 is just a valid index),
            # so rows that reach a leaf early stay put on the remaining levels.
            local_feature = np.where(is_leaf, 0, tree.feature.astype(np.intp))
            features.append(np.where(is_leaf, 0, feature_map[local_feature]))
            thresholds.append(np.where(is_leaf, 0.0, tree.threshold))
            pair = np.stack(
                [np.where(is_leaf, node_ids, left), np.where(is_leaf, node_ids, right)],
                axis=1,
            )
            children.append(pair + offset)
            missing_right.append(~tree.missing_go_to_left.astype(bool))

            # Keep scikit-learn's exact expression (root depth 1, then "- 1.0")
            # instead of the algebraically equal "depth + c(n)", which can round
            # differently in the last bit.
            depths = tree.compute_node_depths().astype(np.float64)
            c = average_path_length(tree.n_node_samples)
            values.append(depths + c - 1.0)

            offsets.append(offset)
            offset += n_nodes
            n_levels = max(n_levels, int(tree.max_depth))

        return cls(
            feature=np.concatenate(features),
            threshold=np.concatenate(thresholds),
            children=np.concatenate(children),
            missing_go_to_right=np.concatenate(missing_right),
            leaf_value=np.concatenate(values),
            tree_offsets=np.asarray(offsets, dtype=np.intp),
            n_levels=n_levels,
            n_features_in=model.n_features_in_,
            max_samples=model.max_samples_,
        )

    def _as_float32_rows(self, X: ArrayLike) -> NDArray[np.float32]:
        """Return X as a C-contiguous float32 matrix, validating its shape."""
        arr = np.asarray(X)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        elif arr.ndim != 2:
            raise ValueError(
                f"Expected X with shape (n_features,) or (n_rows, n_features), "
                f"got an array with shape {arr.shape}."
            )
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {arr.shape[1]} features, but PackedForest is expecting "
                f"{self.n_features_in_} features as input."
            )
        if arr.dtype == np.float32 and arr.flags.c_contiguous:
            return arr
        # scikit-learn validates X to float32 before walking the trees; values
        # beyond float32's range become +/-inf there too, so silence the
        # overflow warning rather than let it reach API logs on every outlier.
        with np.errstate(over="ignore", invalid="ignore"):
            return np.ascontiguousarray(arr, dtype=np.float32)

    def _depths(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        """Return scikit-learn's summed per-tree depths for float32 rows."""
        n_rows = x.shape[0]
        flat = x.reshape(-1)
        feature = self._feature
        threshold = self._threshold32
        children = self._children
        has_nan = bool(np.isnan(flat).any())

        if n_rows == 1:
            # One row: node ids form a 1-D (n_trees,) vector and the feature
            # index is directly an index into the row; saves an add per level.
            node = self._roots.copy()
            row_base: Any = 0
        else:
            node = np.empty((n_rows, self.n_estimators_), dtype=np.intp)
            node[:] = self._roots
            row_base = np.arange(0, n_rows * x.shape[1], x.shape[1], dtype=np.intp)
            row_base = row_base[:, None]

        for _ in range(self.n_levels_):
            idx = feature.take(node)
            if n_rows != 1:
                idx += row_base
            value = flat.take(idx)
            go_right = value > threshold.take(node)
            if has_nan:
                # NaN compares False above; scikit-learn follows the node's
                # missing-value direction instead.
                is_nan = np.isnan(value)
                go_right = np.where(
                    is_nan, self._missing_go_to_right.take(node), go_right
                )
            node *= 2
            node += go_right
            node = children.take(node)

        values = self._leaf_value.take(node)
        # scikit-learn adds tree contributions one tree at a time in tree order;
        # cumsum is sequential as well, while sum() would use pairwise summation
        # and could differ in the last bits.
        return np.cumsum(values, axis=-1)[..., -1].reshape(n_rows)

    def score_samples(self, X: ArrayLike) -> NDArray[np.float64]:
        """Return scikit-learn's ``score_samples`` for X (lower = more abnormal).

        X has shape (n_features,) or (n_rows, n_features); the result always
        has shape (n_rows,) with values in [-1, 0].
        """
        x = self._as_float32_rows(X)
        if x.shape[0] == 0:
            return np.zeros(0)
        depths = self._depths(x)
        # Same expression as IsolationForest._compute_score_samples, including
        # the single-training-sample case where the denominator is 0.
        denominator = self._denominator
        scores = 2 ** (
            -np.divide(
                depths, denominator, out=np.ones_like(depths), where=denominator != 0
            )
        )
        return -scores

    def anomaly_score(self, X: ArrayLike) -> NDArray[np.float64]:
        """Return the anomaly score in (0, 1]; higher means more anomalous."""
        return -self.score_samples(X)


def forest_bench(*, n_rows_single: int = 2000, seed: int = 0) -> dict[str, float]:
    """Time PackedForest against scikit-learn and check they agree.

    Fit ``IsolationForest(n_estimators=100, random_state=seed)`` on 20,000
    random rows of 14 features, then time one-row ``score_samples`` calls
    (200 for scikit-learn, ``n_rows_single`` for PackedForest) and a
    100,000-row batch scored in chunks of 1,000 rows by both. Return the timings
    and the largest absolute score difference seen on the rows scored by both.
    """
    from sklearn.ensemble import IsolationForest

    n_features = 14
    n_train = 20_000
    n_batch = 100_000
    chunk = 1_000
    n_sklearn_single = 200

    rng = np.random.default_rng(seed)
    X_train = rng.standard_normal((n_train, n_features))
    model = IsolationForest(n_estimators=100, random_state=seed).fit(X_train)
    packed = PackedForest.from_isolation_forest(model)

    # Score rows from a wider distribution so some land in sparse regions.
    X_batch = rng.standard_normal((n_batch, n_features)) * 1.5
    n_single = max(n_rows_single, n_sklearn_single)
    X_single = rng.standard_normal((n_single, n_features)) * 1.5

    max_abs_diff = 0.0

    sk_times = []
    for row in X_single[:n_sklearn_single]:
        t0 = time.perf_counter()
        sk_score = model.score_samples(row.reshape(1, -1))
        sk_times.append(time.perf_counter() - t0)
        diff = abs(float(sk_score[0]) - float(packed.score_samples(row)[0]))
        max_abs_diff = max(max_abs_diff, diff)

    packed.score_samples(X_single[0])  # warm up caches and lazy imports
    packed_times = []
    for row in X_single[:n_rows_single]:
        t0 = time.perf_counter()
        packed.score_samples(row)
        packed_times.append(time.perf_counter() - t0)

    packed_out = np.empty(n_batch)
    t0 = time.perf_counter()
    for start in range(0, n_batch, chunk):
        packed_out[start : start + chunk] = packed.score_samples(
            X_batch[start : start + chunk]
        )
    packed_batch_s = time.perf_counter() - t0

    sk_out = np.empty(n_batch)
    t0 = time.perf_counter()
    for start in range(0, n_batch, chunk):
        sk_out[start : start + chunk] = model.score_samples(
            X_batch[start : start + chunk]
        )
    sk_batch_s = time.perf_counter() - t0
    max_abs_diff = max(max_abs_diff, float(np.max(np.abs(packed_out - sk_out))))

    packed_ms = np.asarray(packed_times) * 1e3
    return {
        "sklearn_one_row_ms": statistics.median(sk_times) * 1e3,
        "packed_one_row_ms": float(np.median(packed_ms)),
        "packed_one_row_p99_ms": float(np.percentile(packed_ms, 99)),
        "packed_batch_rows_per_s": n_batch / packed_batch_s,
        "sklearn_batch_rows_per_s": n_batch / sk_batch_s,
        "max_abs_diff": max_abs_diff,
    }


if __name__ == "__main__":
    for key, val in forest_bench().items():
        print(f"{key}: {val:.6g}")
