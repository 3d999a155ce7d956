"""The model registry: train an Isolation Forest (and, with enough labels, the
classifier beside it), store them safely, load the active one.

Artifacts are skops files kept in the database with their SHA-256, so every node sees
the same model and loading one can run no code (unlike pickle). Scoring uses the
array-packed evaluation in `detection.forest`, equal to scikit-learn's within 1e-12.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import skops.io as sio
from django.db import transaction
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.metrics import average_precision_score

from detection.classifier import FraudClassifier
from detection.explain import FEATURE_QUANTILE_GRID
from detection.forest import PackedForest
from detection.models import ModelVersion
from detection.state import FEATURE_NAMES

logger = logging.getLogger(__name__)

DEFAULT_FOREST_PARAMS = {"n_estimators": 100, "max_samples": 256, "random_state": 42}
MIN_TRAINING_SAMPLES = 200
QUANTILE_GRID = np.linspace(0.0, 1.0, 1001)


def score_quantiles(forest: IsolationForest, matrix: np.ndarray) -> np.ndarray:
    """Return the training set's anomaly scores at QUANTILE_GRID."""
    scores = -PackedForest.from_isolation_forest(forest).score_samples(matrix)
    return np.quantile(scores, QUANTILE_GRID)


class ModelIntegrityError(RuntimeError):
    """Raise when a stored artifact does not match its checksum or feature list."""


@dataclass(frozen=True)
class LoadedModel:
    """An active model ready for scoring."""

    version: str
    forest: PackedForest
    feature_names: tuple[str, ...]
    # Anomaly scores of the training set at quantiles 0, 0.001, ..., 1.
    score_quantiles: np.ndarray
    # Training features at detection.explain.FEATURE_QUANTILE_GRID (None for
    # models stored before: their reasons name no unusual features).
    feature_quantiles: np.ndarray | None = None
    # The supervised classifier trained with it (None: too few labels then).
    classifier: FraudClassifier | None = None

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        """Return each score's percentile (0..1) among the training scores."""
        return np.interp(scores, self.score_quantiles, QUANTILE_GRID)

    def anomaly_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Return anomaly scores in 0..1 (higher is more anomalous) for each row."""
        return -self.forest.score_samples(matrix)


class TooFewToTrain(ValueError):
    """Raise when fewer than MIN_TRAINING_SAMPLES transactions are there to train on."""

    def __init__(self, got: int, where: str = "") -> None:
        super().__init__(
            f"Need at least {MIN_TRAINING_SAMPLES} transactions to train, "
            f"got {got:,}{where}."
        )


def forest_train(matrix: np.ndarray, *, params: dict | None = None) -> IsolationForest:
    """Return an Isolation Forest fitted on a feature matrix."""
    if len(matrix) < MIN_TRAINING_SAMPLES:
        raise TooFewToTrain(len(matrix))
    forest = IsolationForest(**{**DEFAULT_FOREST_PARAMS, **(params or {})})
    forest.fit(matrix)
    return forest


def challenger_decision(
    *,
    truth: np.ndarray,
    candidate_scores: np.ndarray,
    active_scores: np.ndarray | None,
    active_version: str | None,
    min_labels: int,
    max_ap_drop: float,
) -> dict:
    """Judge a newly trained model (the challenger) against the active one.

    `truth` says which labelled transactions are fraud (latest label); the scores
    are each model's anomaly scores of the same transactions. Average precision
    (AP) ranks how well a model puts the labelled fraud above the labelled legit.
    The challenger is activated unless there are enough labels of each kind to
    judge by and its AP falls more than `max_ap_drop` below the active model's.
    Return a JSON-ready record: counts, both APs, `activate` and the reason.
    """
    frauds = int(truth.sum())
    legits = int(len(truth) - frauds)
    record: dict = {
        "labelled_fraud": frauds,
        "labelled_legit": legits,
        "average_precision": None,
        "active_version": active_version,
        "active_average_precision": None,
    }
    if active_version is None:
        return {**record, "activate": True, "reason": "no active model to compare"}
    if min(frauds, legits) < min_labels:
        return {
            **record,
            "activate": True,
            "reason": (
                f"too few labels to compare ({frauds} fraud, {legits} legit; "
                f"{min_labels} of each needed)"
            ),
        }
    if active_scores is None:
        return {
            **record,
            "activate": True,
            "reason": f"{active_version} could not be loaded to compare with",
        }
    challenger = float(average_precision_score(truth, candidate_scores))
    champion = float(average_precision_score(truth, active_scores))
    record["average_precision"] = round(challenger, 4)
    record["active_average_precision"] = round(champion, 4)
    if challenger < champion - max_ap_drop:
        return {
            **record,
            "activate": False,
            "reason": (
                f"average precision {challenger:.4f} on labelled transactions is "
                f"more than {max_ap_drop:g} below {active_version}'s {champion:.4f}"
            ),
        }
    return {
        **record,
        "activate": True,
        "reason": (
            f"average precision {challenger:.4f} against {active_version}'s "
            f"{champion:.4f} (at most {max_ap_drop:g} lower is accepted)"
        ),
    }


# `replacing` of an activation that replaces whatever is active.
ANY_ACTIVE = object()


def model_version_create(
    *,
    forest: IsolationForest,
    quantiles: np.ndarray,
    features: np.ndarray | None = None,
    sample_count: int,
    trained_from: datetime | None,
    trained_until: datetime | None,
    activate: bool = True,
    evaluation: dict | None = None,
    classifier: FraudClassifier | None = None,
    replacing: object = ANY_ACTIVE,
) -> ModelVersion:
    """Store a trained forest (and classifier) as a new ModelVersion, activating
    it if asked, and if `replacing` (the version it was judged against, None
    for none) is still the active one; else it is stored inactive, saying so."""
    artifact = sio.dumps(forest)
    classifier_artifact = b"" if classifier is None else sio.dumps(classifier.model)
    now = datetime.now(UTC)
    version = f"iforest-{now:%Y%m%d-%H%M%S}-{hashlib.sha256(artifact).hexdigest()[:8]}"
    with transaction.atomic():
        row = ModelVersion.objects.create(
            version=version,
            artifact=artifact,
            artifact_sha256=hashlib.sha256(artifact).hexdigest(),
            feature_names=list(FEATURE_NAMES),
            params={
                key: value
                for key, value in forest.get_params().items()
                if isinstance(value, int | float | str | bool | type(None))
            },
            trained_from=trained_from,
            trained_until=trained_until,
            sample_count=sample_count,
            score_quantiles=[float(value) for value in quantiles],
            feature_quantiles=[] if features is None else features.tolist(),
            trained_at=now,
            evaluation=evaluation or {},
            classifier_artifact=classifier_artifact,
            classifier_sha256=(
                hashlib.sha256(classifier_artifact).hexdigest()
                if classifier_artifact
                else ""
            ),
            classifier_info={} if classifier is None else classifier.info,
        )
        if activate:
            try:
                model_version_activate(version=row.version, replacing=replacing)
            except ActiveModelChanged as exc:
                row.evaluation = {
                    **row.evaluation,
                    "activate": False,
                    "reason": f"not activated: {exc}",
                }
                row.save(update_fields=["evaluation"])
    logger.info("stored model %s (%d samples)", row.version, sample_count)
    return row


class ActiveModelChanged(RuntimeError):
    """Raise when the active version is no longer the one a new version was
    judged against (an admin's rollback, another retrain, meanwhile)."""


# Any fixed number: the PostgreSQL advisory lock that activations take turns on.
_ACTIVATION_LOCK = 0x46524D56


def model_version_activate(
    *, version: str, replacing: object = ANY_ACTIVE
) -> ModelVersion:
    """Make this version the active one (running scorers pick it up on refresh).

    Two activations at once (the scheduled retrain and a manual one) take turns:
    SQLite's write transactions already do; on PostgreSQL a transaction-scoped
    advisory lock does, else both could clear the old active row and the second
    would break the one-active constraint and lose its model. With
    `replacing` (a version, or None for no model), raise ActiveModelChanged
    unless that is still the active one: a retrain judged against it must not
    undo a rollback made while it trained.
    """
    with transaction.atomic():
        connection = transaction.get_connection()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ACTIVATION_LOCK])
        if replacing is not ANY_ACTIVE:
            current = (
                ModelVersion.objects.filter(is_active=True)
                .values_list("version", flat=True)
                .first()
            )
            if current != replacing:
                raise ActiveModelChanged(
                    f"{current or 'no model'} became active while this version "
                    f"was judged against {replacing or 'no model'}"
                )
        ModelVersion.objects.filter(is_active=True).update(is_active=False)
        ModelVersion.objects.filter(version=version).update(is_active=True)
        return ModelVersion.objects.get(version=version)


# The only types beyond skops' defaults that each artifact may hold. The checksum
# lives in the same row, so it catches corruption, not a hostile database
# writer; this list is what keeps loading from building anything else.
FOREST_TYPES = frozenset({"sklearn.tree._tree.Tree"})
CLASSIFIER_TYPES = frozenset(
    {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
)


def _artifact_load(artifact: bytes, sha256: str, *, what: str, types: frozenset):
    """Return the object in a skops artifact, after checking its checksum and
    that it holds no types but `types` (anything else is refused)."""
    if hashlib.sha256(artifact).hexdigest() != sha256:
        raise ModelIntegrityError(f"{what}: artifact checksum mismatch.")
    untrusted = sio.get_untrusted_types(data=artifact)
    if set(untrusted) - types:
        raise ModelIntegrityError(
            f"{what} holds untrusted types: {sorted(set(untrusted) - types)}."
        )
    return sio.loads(artifact, trusted=list(untrusted))


def model_load(row: ModelVersion) -> LoadedModel:
    """Return the scorer for a stored version, verifying checksums and features."""
    if tuple(row.feature_names) != FEATURE_NAMES or len(row.score_quantiles) != len(
        QUANTILE_GRID
    ):
        raise ModelIntegrityError(
            f"Model {row.version} was trained on other features; retrain it."
        )
    forest = _artifact_load(
        bytes(row.artifact),
        row.artifact_sha256,
        what=f"Model {row.version}",
        types=FOREST_TYPES,
    )
    # skops trusts some types by default (a dict, other estimators): the slot
    # must hold what it is for.
    if not isinstance(forest, IsolationForest):
        raise ModelIntegrityError(
            f"Model {row.version}'s artifact is a {type(forest).__name__}, "
            "not an IsolationForest."
        )
    classifier = None
    if row.classifier_artifact:
        classifier = FraudClassifier(
            model=_artifact_load(
                bytes(row.classifier_artifact),
                row.classifier_sha256,
                what=f"Model {row.version}'s classifier",
                types=CLASSIFIER_TYPES,
            ),
            info=row.classifier_info,
        )
        if not isinstance(classifier.model, HistGradientBoostingClassifier):
            raise ModelIntegrityError(
                f"Model {row.version}'s classifier is a "
                f"{type(classifier.model).__name__}, not a "
                "HistGradientBoostingClassifier."
            )
    features = np.asarray(row.feature_quantiles or [], dtype=np.float64)
    shape = (len(FEATURE_QUANTILE_GRID), len(FEATURE_NAMES))
    return LoadedModel(
        version=row.version,
        forest=PackedForest.from_isolation_forest(forest),
        feature_names=FEATURE_NAMES,
        score_quantiles=np.asarray(row.score_quantiles, dtype=np.float64),
        feature_quantiles=features if features.shape == shape else None,
        classifier=classifier,
    )


def model_active_row() -> ModelVersion | None:
    """Return the active ModelVersion row, or None."""
    return ModelVersion.objects.filter(is_active=True).first()


def model_active_version() -> str | None:
    """Return the active model's version, or None (without reading its files)."""
    return (
        ModelVersion.objects.filter(is_active=True)
        .values_list("version", flat=True)
        .first()
    )


def default_training_since(days: float) -> datetime:
    """Return the start of a training window ending now."""
    return datetime.now(UTC) - timedelta(days=days)
