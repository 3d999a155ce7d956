"""PackedForest must reproduce IsolationForest.score_samples to within 1e-12."""

import warnings

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from detection.forest import PackedForest, average_path_length

TOL = 1e-12
SEEDS = [0, 1, 2]
N_FEATURES = 6
# sklearn's one-row calls cost milliseconds each, so check a sample of rows
# one by one and all rows as a batch.
N_SINGLE_ROWS = 25


def _fit(X, seed, **params):
    """Fit an IsolationForest on X and return it with its packed copy."""
    with warnings.catch_warnings():
        # max_samples larger than the data set warns; that case is wanted here.
        warnings.simplefilter("ignore", UserWarning)
        model = IsolationForest(random_state=seed, **params).fit(X)
    return model, PackedForest.from_isolation_forest(model)


def _sklearn_scores(model, X):
    """Return sklearn's scores, hiding float32 overflow warnings on huge inputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return model.score_samples(X)


def _assert_matches(model, packed, X):
    """Assert batch and one-row packed scores equal sklearn's within TOL."""
    expected = _sklearn_scores(model, X)

    batch = packed.score_samples(X)
    assert batch.shape == (X.shape[0],)
    assert np.max(np.abs(batch - expected)) <= TOL

    rows = np.linspace(0, X.shape[0] - 1, min(N_SINGLE_ROWS, X.shape[0]))
    for i in rows.astype(int):
        one_expected = _sklearn_scores(model, X[i : i + 1])
        one_2d = packed.score_samples(X[i : i + 1])
        one_1d = packed.score_samples(X[i])
        assert abs(one_2d[0] - one_expected[0]) <= TOL
        assert abs(one_1d[0] - one_expected[0]) <= TOL
        # A row must score the same alone as inside a batch.
        assert abs(one_1d[0] - batch[i]) <= TOL


def _random_rows(rng, n_rows, n_features=N_FEATURES):
    """Return normal rows with mixed scales, as real transaction features have."""
    scales = np.logspace(-2, 3, n_features)
    return rng.standard_normal((n_rows, n_features)) * scales


def _split_nodes(model):
    """Yield (tree index, global feature, threshold) for every internal node."""
    for t, (est, features) in enumerate(
        zip(model.estimators_, model.estimators_features_, strict=True)
    ):
        tree = est.tree_
        internal = tree.children_left != -1
        for f, thr in zip(
            tree.feature[internal], tree.threshold[internal], strict=True
        ):
            yield t, int(features[f]), float(thr)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"max_features": 0.5},
        {"bootstrap": True},
        {"max_samples": 64},
        {"max_features": 0.5, "bootstrap": True, "max_samples": 64},
        {"n_estimators": 17, "max_features": 2},
    ],
    ids=["default", "max_features", "bootstrap", "max_samples", "combined", "small"],
)
def test_scores_match_sklearn_on_random_rows(seed, params):
    """Scores equal sklearn's within 1e-12 on random rows, for every fit option."""
    rng = np.random.default_rng(seed)
    model, packed = _fit(_random_rows(rng, 2_000), seed, **params)
    X = np.vstack([_random_rows(rng, 300), _random_rows(rng, 100) * 3])
    _assert_matches(model, packed, X)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_train", [1, 2, 3, 40, 200])
def test_scores_match_sklearn_on_small_training_sets(seed, n_train):
    """Data sets below 256 rows (max_samples_ = n_rows) still score identically."""
    rng = np.random.default_rng(seed)
    model, packed = _fit(_random_rows(rng, n_train), seed)
    assert model.max_samples_ == n_train
    _assert_matches(model, packed, _random_rows(rng, 200))


@pytest.mark.parametrize("seed", SEEDS)
def test_scores_match_when_max_samples_exceeds_data(seed):
    """max_samples larger than the data set is clipped exactly as sklearn does."""
    rng = np.random.default_rng(seed)
    model, packed = _fit(_random_rows(rng, 150), seed, max_samples=256)
    assert packed.max_samples_ == model.max_samples_ == 150
    _assert_matches(model, packed, _random_rows(rng, 200))


def test_single_training_sample_per_tree_scores_like_sklearn():
    """With max_samples=1 sklearn's zero denominator case gives -0.5 everywhere."""
    rng = np.random.default_rng(0)
    model, packed = _fit(_random_rows(rng, 100), 0, max_samples=1)
    X = _random_rows(rng, 50)
    _assert_matches(model, packed, X)
    assert np.all(packed.score_samples(X) == -0.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_scores_match_far_outside_training_range(seed):
    """Extreme values, infinities and float32 overflow score like sklearn."""
    rng = np.random.default_rng(seed)
    model, packed = _fit(_random_rows(rng, 1_000), seed, max_features=0.5)
    base = _random_rows(rng, 400)
    magnitudes = np.array([1e3, 1e6, 1e12, 1e30, 1e39, 1e300, np.inf])
    # Push a random subset of features in each row to +/- a huge magnitude.
    mask = rng.random(base.shape) < 0.4
    signs = rng.choice([-1.0, 1.0], size=base.shape)
    huge = signs * rng.choice(magnitudes, size=base.shape)
    X = np.where(mask, huge, base)
    X[:2] = [np.inf], [-np.inf]
    _assert_matches(model, packed, X)


@pytest.mark.parametrize("seed", SEEDS)
def test_scores_match_on_split_thresholds(seed):
    """Inputs equal to split thresholds follow sklearn's float32(x) <= thr rule."""
    rng = np.random.default_rng(seed)
    model, packed = _fit(_random_rows(rng, 1_000), seed, max_features=0.5)
    nodes = list(_split_nodes(model))
    roots = [next(n for n in nodes if n[0] == t) for t in range(len(model.estimators_))]
    picked = roots + [nodes[i] for i in rng.choice(len(nodes), 300, replace=False)]

    rows = []
    for _, feature, thr in picked:
        thr32 = np.float32(thr)
        # The float64 threshold itself, its float32 rounding and the float32
        # neighbours on both sides: float32(x) lands on or next to thr.
        for value in (
            thr,
            float(thr32),
            float(np.nextafter(thr32, np.float32(np.inf))),
            float(np.nextafter(thr32, np.float32(-np.inf))),
        ):
            row = _random_rows(rng, 1)[0]
            row[feature] = value
            rows.append(row)
    X = np.asarray(rows)

    # The test only proves something if casting to float32 moves some inputs
    # across their threshold (a float64 comparison would then branch left).
    assert any(float(np.float32(thr)) > thr for _, _, thr in picked)
    _assert_matches(model, packed, X)

    # Every row with all features sitting exactly on thresholds.
    by_feature = {}
    for _, feature, thr in nodes:
        by_feature.setdefault(feature, []).append(thr)
    X_all = np.array(
        [
            [rng.choice(by_feature.get(f, [0.0])) for f in range(N_FEATURES)]
            for _ in range(200)
        ]
    )
    _assert_matches(model, packed, X_all)


@pytest.mark.parametrize("seed", SEEDS)
def test_scores_match_on_integer_like_values(seed):
    """Integer-valued features (counts, amounts in cents) score like sklearn."""
    rng = np.random.default_rng(seed)
    X_train = np.column_stack(
        [
            rng.integers(0, 5, 1_500),
            rng.integers(0, 100, 1_500),
            rng.integers(0, 2, 1_500),
            rng.integers(-3, 3, 1_500),
            rng.integers(2**24 - 50, 2**24 + 50, 1_500),  # beyond float32's ints
            rng.integers(0, 1_000_000, 1_500),
        ]
    )
    model, packed = _fit(X_train.astype(np.float64), seed)
    X = np.column_stack(
        [
            rng.integers(-2, 8, 400),
            rng.integers(-10, 120, 400),
            rng.integers(0, 3, 400),
            rng.integers(-5, 5, 400),
            rng.integers(2**24 - 60, 2**24 + 60, 400),
            rng.integers(-1_000, 1_100_000, 400),
        ]
    )
    _assert_matches(model, packed, X.astype(np.float64))
    # Integer dtype input is cast the same way as float64 input.
    assert np.max(np.abs(packed.score_samples(X) - model.score_samples(X))) <= TOL


def test_scores_match_with_missing_values():
    """NaN inputs follow each node's learned missing-value direction."""
    rng = np.random.default_rng(0)
    X_train = _random_rows(rng, 1_000)
    X_train[rng.random(X_train.shape) < 0.1] = np.nan
    model, packed = _fit(X_train, 0)
    X = _random_rows(rng, 300)
    X[rng.random(X.shape) < 0.2] = np.nan
    _assert_matches(model, packed, X)


def test_one_dimensional_input_scores_one_row():
    """A (n_features,) vector is scored as one row and returns shape (1,)."""
    rng = np.random.default_rng(0)
    model, packed = _fit(_random_rows(rng, 500), 0)
    row = _random_rows(rng, 1)[0]
    out = packed.score_samples(row)
    assert out.shape == (1,)
    assert abs(out[0] - model.score_samples(row.reshape(1, -1))[0]) <= TOL
    # Plain Python sequences work too.
    assert packed.score_samples(row.tolist())[0] == out[0]


def test_anomaly_score_is_negated_score_and_in_unit_interval():
    """anomaly_score is -score_samples and lies in (0, 1]."""
    rng = np.random.default_rng(0)
    _, packed = _fit(_random_rows(rng, 500), 0)
    X = _random_rows(rng, 100) * 5
    anomaly = packed.anomaly_score(X)
    assert np.array_equal(anomaly, -packed.score_samples(X))
    assert np.all((anomaly > 0) & (anomaly <= 1))


def test_exposes_fitted_metadata():
    """n_features_in_, n_estimators_ and max_samples_ mirror the sklearn model."""
    rng = np.random.default_rng(0)
    model, packed = _fit(_random_rows(rng, 500), 0, n_estimators=13)
    assert packed.n_features_in_ == model.n_features_in_ == N_FEATURES
    assert packed.n_estimators_ == 13
    assert packed.max_samples_ == model.max_samples_


@pytest.mark.parametrize(
    "shape", [(N_FEATURES - 1,), (N_FEATURES + 1,), (3, N_FEATURES - 1), (3, 0)]
)
def test_wrong_feature_count_raises_clear_value_error(shape):
    """A wrong number of features raises ValueError naming both counts."""
    rng = np.random.default_rng(0)
    _, packed = _fit(_random_rows(rng, 300), 0)
    got = shape[-1]
    with pytest.raises(
        ValueError,
        match=rf"X has {got} features, but PackedForest is expecting "
        rf"{N_FEATURES} features",
    ):
        packed.score_samples(np.zeros(shape))


def test_wrong_number_of_dimensions_raises_value_error():
    """Inputs that are neither 1-D nor 2-D raise ValueError mentioning the shape."""
    rng = np.random.default_rng(0)
    _, packed = _fit(_random_rows(rng, 300), 0)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 6\)"):
        packed.score_samples(np.zeros((2, 3, N_FEATURES)))


def test_unfitted_model_cannot_be_packed():
    """Packing an unfitted IsolationForest raises ValueError."""
    with pytest.raises(ValueError, match="fitted"):
        PackedForest.from_isolation_forest(IsolationForest())


def test_average_path_length_matches_sklearn_bit_for_bit():
    """c(n) equals sklearn's private _average_path_length exactly."""
    from sklearn.ensemble._iforest import _average_path_length

    n = np.array([0, 1, 2, 3, 4, 17, 64, 255, 256, 10_000])
    assert np.array_equal(average_path_length(n), _average_path_length(n))
    assert average_path_length(n)[:3].tolist() == [0.0, 0.0, 1.0]
