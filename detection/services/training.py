"""Retraining: replay stored history into features, fit, check, store, activate."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db.models import Q

from detection.classifier import (
    FraudClassifier,
    TooFewLabels,
    classifier_fit,
    classifier_summary,
    classifier_train,
)
from detection.explain import feature_quantiles
from detection.forest import PackedForest
from detection.registry import (
    ANY_ACTIVE,
    QUANTILE_GRID,
    LoadedModel,
    ModelIntegrityError,
    challenger_decision,
    forest_train,
    model_active_row,
    model_load,
    model_version_create,
    score_quantiles,
)
from detection.scoring import (
    feature_matrix,
    model_alone_flag_rate,
    scoring_config_from_db,
    transaction_features_batch,
)
from detection.state import FEATURE_DTYPE, FEATURE_NAMES, InMemoryStateStore
from transactions.messages import SCORING_INPUT_FIELDS, TransactionMessage
from transactions.models import Transaction

logger = logging.getLogger(__name__)


def features_replay(
    messages: Sequence[TransactionMessage],
    *,
    rates: Mapping[str, float] | None = None,
    learns: Sequence[bool] | None = None,
) -> tuple[np.ndarray, InMemoryStateStore]:
    """Replay messages in event order through fresh in-memory state.

    Return the feature matrix (one row per message, in event order) and the
    store, so that a backtest can go on scoring from the state it reached.
    `rates` convert amounts as the scorers do (ScoringConfig.rates); `learns`
    (aligned with `messages`, default all True) says which teach the profile
    (False for those stored as fraud: see UserState).
    """
    order = sorted(range(len(messages)), key=lambda i: messages[i].timestamp)
    ordered = [messages[i] for i in order]
    ordered_learns = None if learns is None else [learns[i] for i in order]
    store = InMemoryStateStore()
    blocks = [np.empty((0, len(FEATURE_NAMES)))]
    for start in range(0, len(ordered), 5000):
        blocks.append(
            features_extend(
                store,
                ordered[start : start + 5000],
                rates=rates,
                learns=None
                if ordered_learns is None
                else ordered_learns[start:][:5000],
            )
        )
    return np.vstack(blocks), store


def features_extend(
    store: InMemoryStateStore,
    messages: Sequence[TransactionMessage],
    *,
    rates: Mapping[str, float] | None = None,
    learns: Sequence[bool] | None = None,
) -> np.ndarray:
    """Advance `store` through messages (in event order, after those it has seen)
    and return their feature rows: `features_replay` a chunk at a time, for a
    replay that streams its input (detection.backtest.ledger_backtest)."""
    states = store.states_get({m.user_id for m in messages})
    prepared = transaction_features_batch(
        messages, states=states, rates=rates, learns=learns
    )
    return feature_matrix(prepared)


@dataclass
class TrainingSet:
    """What a retrain fits, and what it is judged on."""

    matrix: np.ndarray  # the rows fitted
    timestamps: list[datetime]  # their event times
    labelled: np.ndarray  # features of every replayed transaction with a label
    labelled_fraud: np.ndarray  # its latest label, aligned with `labelled`
    # The classifier's rows (detection.classifier), in event order: those of
    # the training window older than MODEL_LABEL_MATURITY_SECONDS, labelled or
    # not (unlabelled: legitimate, no chargeback came); their truth.
    supervised: np.ndarray | None = None
    supervised_fraud: np.ndarray | None = None
    supervised_timestamps: list[datetime] | None = None


def message_as_scored(stored: Mapping[str, object]) -> TransactionMessage:
    """Return a stored transaction's message, from its SCORING_INPUT_FIELDS and
    `amount_base`, with the amount as it was compared when scored.

    That is `amount_base` (converted at that day's rate), not the amount to be
    converted again at today's rates: a rate edited or removed since must not
    change what a retrain or a label teaches. `amount_base` is stored
    unrounded (`transaction_row`); rows stored before that were rounded to the
    base currency's cents, and those under half a cent (0.01 MXN, 50 IDR,
    0.001 KWD: card testing) read 0.00, which a profile cannot learn (it takes
    the log): such an amount, or one not stored at all, is converted at
    today's rate.
    """
    fields = dict(stored)
    amount_base = fields.pop("amount_base")
    if amount_base:
        fields["amount"] = Decimal(str(amount_base))
        fields["currency"] = settings.BASE_CURRENCY
    return TransactionMessage(**fields)


def training_features(
    *, since: datetime | None = None, limit: int = 200_000, warmup: int | None = None
) -> TrainingSet:
    """Return the feature matrix to train on, with the labelled rows to judge by.

    The newest `limit` transactions (from `since`) are the training window.
    When every one of them has the feature vector its scoring stored, those are
    the features (`_stored_training_set`). Otherwise they are replayed in event
    order after up to `warmup` (default: `limit`) older
    ones, which only build up the users' state: live scorers see cards with
    their whole history, and a model fitted on cold-start features would rank
    warm cards wrongly. Transactions an analyst confirmed as fraud (latest label)
    advance the state, as they did live, but are not fitted: the forest learns
    normal behaviour. Every replayed transaction with a label (warm-up included)
    is returned with its features for the activation gate. The classifier
    (`TrainingSet.supervised`) learns from the window's transactions older than
    MODEL_LABEL_MATURITY_SECONDS, whatever their label: younger ones may be
    frauds whose chargeback is on its way, and taking only their labelled ones
    would teach it that recent means fraud; warm-up rows start cold (a card's
    first replayed payment has no history), as no live payment does. Ground
    truth (is_fraud of a simulated record) is never read.
    """
    # Newest first, ties in the order they were stored (as they were scored).
    base = Transaction.objects.with_latest_label().order_by("-timestamp", "-id")
    window = base if since is None else base.filter(timestamp__gte=since)
    stored = _stored_training_set(base, window, limit=limit, warmup=warmup)
    if stored is not None:
        return stored
    fields = (
        *SCORING_INPUT_FIELDS,
        "id",
        "amount_base",
        "latest_label_fraud",
        "profile_learned",
    )
    train_rows = list(window.values(*fields)[:limit])
    warm_rows = []
    if train_rows:
        oldest = train_rows[-1]
        warm_limit = limit if warmup is None else warmup
        # Strictly before the window's oldest row in that order (a keyset: rows
        # sharing its timestamp but stored before it are warm-up, not lost).
        before = Q(timestamp__lt=oldest["timestamp"]) | Q(
            timestamp=oldest["timestamp"], id__lt=oldest["id"]
        )
        warm_rows = list(base.filter(before).values(*fields)[:warm_limit])
    rows = [*reversed(warm_rows), *reversed(train_rows)]  # event order
    for row in rows:
        del row["id"]
    labels = [row.pop("latest_label_fraud") for row in rows]
    # As live: a transaction judged fraud did not teach its card's profile,
    # unless an analyst found it legitimate since (`transaction_label`).
    learns = [row.pop("profile_learned") for row in rows]
    labelled = np.array([label is not None for label in labels], dtype=bool)
    confirmed = np.array([label is True for label in labels], dtype=bool)
    fit = (np.arange(len(rows)) >= len(warm_rows)) & ~confirmed
    messages = [message_as_scored(row) for row in rows]
    rates = scoring_config_from_db(model=None).rates
    # features_replay sorts by event time, stably: its rows stay aligned with `fit`.
    matrix, _ = features_replay(messages, rates=rates, learns=learns)
    timestamps = [m.timestamp for m, keep in zip(messages, fit, strict=True) if keep]
    mature_before = _mature_before()
    supervised = (np.arange(len(rows)) >= len(warm_rows)) & np.array(
        [m.timestamp <= mature_before for m in messages], dtype=bool
    )
    return TrainingSet(
        matrix=matrix[fit],
        timestamps=timestamps,
        labelled=matrix[labelled],
        labelled_fraud=confirmed[labelled],
        supervised=matrix[supervised],
        supervised_fraud=confirmed[supervised],
        supervised_timestamps=[
            m.timestamp for m, keep in zip(messages, supervised, strict=True) if keep
        ],
    )


def _mature_before() -> datetime:
    """Return the time before which a payment's label is taken as final: the
    classifier learns from payments older than MODEL_LABEL_MATURITY_SECONDS."""
    return datetime.now(UTC) - timedelta(seconds=settings.MODEL_LABEL_MATURITY_SECONDS)


def _vector_ok(blob: bytes | None) -> bool:
    """Return whether a stored feature vector has the current features' size."""
    size = len(FEATURE_NAMES) * np.dtype(FEATURE_DTYPE).itemsize
    return blob is not None and len(blob) == size


def _vectors(blobs: Sequence[bytes]) -> np.ndarray:
    """Return stored feature vectors (Transaction.features) as a float64 matrix."""
    if not blobs:
        return np.empty((0, len(FEATURE_NAMES)))
    packed = np.frombuffer(b"".join(bytes(blob) for blob in blobs), FEATURE_DTYPE)
    return packed.reshape(len(blobs), len(FEATURE_NAMES)).astype(np.float64)


def _stored_training_set(
    base, window, *, limit: int, warmup: int | None
) -> TrainingSet | None:
    """Return the training set from the feature vectors stored with the
    verdicts, or None when a row of the window has none (stored before they
    were, or without scoring): then the ledger is replayed.

    Stored vectors are what scoring computed, so the model learns exactly what
    it is later asked: each card with its whole history, a fraud verdict that
    an analyst later found legitimate as it looked when scored, a late arrival
    as it arrived. No warm-up replay is needed; the labelled rows before the
    window (up to `warmup`, default `limit`) still join the activation gate's
    labelled set, as the replay's warm-up rows do.
    """
    fields = ("id", "timestamp", "features", "latest_label_fraud")
    train_rows = list(window.values_list(*fields)[:limit])
    if not train_rows or not all(_vector_ok(row[2]) for row in train_rows):
        return None
    oldest_id, oldest_time = train_rows[-1][0], train_rows[-1][1]
    before = Q(timestamp__lt=oldest_time) | Q(timestamp=oldest_time, id__lt=oldest_id)
    # The rows a replay would warm up on: their labelled ones join the gate's
    # labelled set. One without a vector (stored before vectors were, where
    # chargebacks for older payments land) sends the whole set to the replay,
    # which scores them all: the gate must not lose labels after an upgrade.
    warm_rows = base.filter(before).values_list(*fields)
    warm_labelled = [
        row
        for row in warm_rows[: limit if warmup is None else warmup]
        if row[3] is not None
    ]
    if not all(_vector_ok(row[2]) for row in warm_labelled):
        return None
    train_rows.reverse()  # event order
    warm_labelled.reverse()
    matrix = _vectors([row[2] for row in train_rows])
    labels = [row[3] for row in train_rows]
    confirmed = np.array([label is True for label in labels], dtype=bool)
    labelled = np.array([label is not None for label in labels], dtype=bool)
    fit = ~confirmed
    timestamps = [row[1] for row in train_rows]
    mature_before = _mature_before()
    supervised = np.array([t <= mature_before for t in timestamps], dtype=bool)
    warm_matrix = _vectors([row[2] for row in warm_labelled])
    warm_fraud = np.array([row[3] is True for row in warm_labelled], dtype=bool)
    return TrainingSet(
        matrix=matrix[fit],
        timestamps=[t for t, keep in zip(timestamps, fit, strict=True) if keep],
        labelled=np.vstack([warm_matrix, matrix[labelled]]),
        labelled_fraud=np.concatenate([warm_fraud, confirmed[labelled]]),
        supervised=matrix[supervised],
        supervised_fraud=confirmed[supervised],
        supervised_timestamps=[
            t for t, keep in zip(timestamps, supervised, strict=True) if keep
        ],
    )


# The flag-rate check of a retrain: the newest stored transactions, replayed after
# this many older ones so that their features carry the cards' history.
RECENT_CHECK_ROWS = 2000
RECENT_CHECK_WARMUP = 50_000
RECENT_CHECK_MIN_ROWS = 100


# A rise in flag rate smaller than this (a share of transactions) is never refused.
FLAG_RATE_RISE_SLACK = 0.01


def flag_rate_decision(
    *,
    rate: float | None,
    active_rate: float | None,
    max_rate: float,
    max_rise: float,
    rows: int,
) -> tuple[bool, str]:
    """Return whether a new model's flag rate on recent traffic is acceptable, and why.

    `rate` and `active_rate` are the shares of the newest transactions the new
    and the active model would flag alone (`model_alone_flag_rate`). The new
    model is refused above `max_rate` (unless the active one flags even more),
    and when it would flag more than `max_rise` times what the active model
    flags (by more than FLAG_RATE_RISE_SLACK): the analysts' queue would grow
    that much overnight.
    """
    if rate is None:
        return True, "flag rate not checked (model rule disabled or no recent rows)"
    text = f"it alone would flag {rate:.1%} of the newest {rows:,} transactions"
    if active_rate is not None:
        text += f" (the active model {active_rate:.1%})"
    if active_rate is not None and rate <= active_rate:
        return True, text
    if rate > max_rate:
        return (
            False,
            text + f", more than MODEL_ACTIVATION_MAX_FLAG_RATE {max_rate:.0%}",
        )
    if (
        active_rate is not None
        and rate > active_rate * max_rise
        and rate - active_rate > FLAG_RATE_RISE_SLACK
    ):
        return False, text + (
            f", more than MODEL_ACTIVATION_MAX_FLAG_RISE {max_rise:g} times as many"
        )
    return True, text


def _duration_text(seconds: float) -> str:
    """Return a duration in words: "30 days", "2 h", "45 s"."""
    if seconds > 0 and seconds % 86400 == 0:
        days = seconds / 86400
        return f"{days:g} day" + ("" if days == 1 else "s")
    if seconds > 0 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


def _classifier_loss(
    active_model: LoadedModel | None,
    classifier: FraudClassifier | None,
    why_none: str,
) -> str:
    """Return why activating would lose the active classifier, or "".

    A retrain that finds too few mature labels (a shell without make run's
    MODEL_LABEL_MATURITY_SECONDS, a label feed that stopped) must not switch
    learned_fraud off silently; `force` still can.
    """
    if classifier is not None or active_model is None:
        return ""
    if active_model.classifier is None:
        return ""
    if not scoring_config_from_db(model=None).learned_fraud_enabled:
        return ""
    return (
        f"the active model {active_model.version} has a classifier on labels and "
        f"this one has none ({why_none}); activating it would silence "
        "learned_fraud (retrain_model --force to activate anyway)"
    )


def _classifier_comparison(
    data: TrainingSet,
    classifier: FraudClassifier | None,
    active_model: LoadedModel | None,
) -> dict | None:
    """Return the new classifier's training judged against the active one, or None.

    Both on the same footing: a trial of the new one is fitted on the payments
    up to the newest the active one learned from (`trained_until`), with the
    labels known now, and both score the payments after it, which neither saw.
    So a model that merely saw more recent data (drift) is not preferred, and
    one taught by wrong labels is caught. `challenger_decision` as for the
    forests: refused when, with enough labels of each kind, the trial's average
    precision there is more than MODEL_ACTIVATION_MAX_AP_DROP lower. None when
    there is nothing to compare (no classifier on either side, or an active one
    stored before classifiers kept `trained_until`).
    """
    if classifier is None or active_model is None or active_model.classifier is None:
        return None
    active_until = active_model.classifier.info.get("trained_until")
    if not active_until:
        return None
    cutoff = datetime.fromisoformat(active_until)
    seen = np.array([t <= cutoff for t in data.supervised_timestamps], dtype=bool)
    truth, rows = data.supervised_fraud, data.supervised
    unseen_fraud = int(truth[~seen].sum())
    unseen_legit = int((~seen).sum()) - unseen_fraud
    enough = min(unseen_fraud, unseen_legit) >= settings.MODEL_ACTIVATION_MIN_LABELS
    candidate_scores = None
    if enough and 0 < truth[seen].sum() < seen.sum():
        trial = classifier_fit(rows[seen], truth[seen])
        candidate_scores = trial.predict_proba(rows[~seen])[:, 1]
    elif enough:
        return {
            "activate": True,
            "rows": int((~seen).sum()),
            "reason": "classifiers not compared: the payments up to "
            f"{cutoff:%Y-%m-%d %H:%M} hold one class only",
        }
    decision = challenger_decision(
        truth=truth[~seen],
        candidate_scores=candidate_scores,
        active_scores=(
            active_model.classifier.probabilities(rows[~seen]) if enough else None
        ),
        active_version=active_model.version,
        min_labels=settings.MODEL_ACTIVATION_MIN_LABELS,
        max_ap_drop=settings.MODEL_ACTIVATION_MAX_AP_DROP,
    )
    decision["rows"] = int((~seen).sum())
    decision["reason"] += (
        f" (classifiers fitted up to {cutoff:%Y-%m-%d %H:%M}, compared on the "
        f"{int((~seen).sum()):,} payments after it)"
    )
    return decision


def _label_feed_collapse(classifier: FraudClassifier | None) -> str:
    """Return why the newest mature payments' labels look cut off, or "".

    Unlabelled mature payments count as legitimate, so a chargeback feed that
    stopped reads as "no more fraud", and a classifier fitted on that learns to
    say so. Refused when the newest fifth's confirmed fraud falls below a
    quarter of what the older rows' rate predicts (with at least
    MODEL_ACTIVATION_MIN_LABELS expected).
    """
    if classifier is None:
        return ""
    info = classifier.info
    older_rows = info["fraud"] + info["legit"] - info["held_out_rows"]
    older_fraud = info["fraud"] - info["held_out_fraud"]
    if older_rows <= 0:
        return ""
    expected = older_fraud / older_rows * info["held_out_rows"]
    if expected < settings.MODEL_ACTIVATION_MIN_LABELS:
        return ""
    if info["held_out_fraud"] >= expected / 4:
        return ""
    return (
        f"only {info['held_out_fraud']:,} confirmed frauds among the newest "
        f"{info['held_out_rows']:,} mature payments, where the older ones' rate "
        f"gives about {expected:,.0f}: has the label feed (chargebacks) stopped? "
        "(retrain_model --force to activate anyway)"
    )


def model_retrain(
    *,
    since: datetime | None = None,
    limit: int = 200_000,
    warmup: int | None = None,
    force: bool = False,
) -> str:
    """Train a new model on stored history (see `training_features`); return it.

    The new version is activated unless it fails a check against what it will
    meet: (1) alone it would flag more than MODEL_ACTIVATION_MAX_FLAG_RATE of the
    newest stored transactions, featurized with their full history as the live
    scorer sees them (a model fitted on cold-start features, say `--warmup 0`,
    finds every warm card odd), and the active model would flag fewer, or more
    than MODEL_ACTIVATION_MAX_FLAG_RISE times what the active model flags; (2) the
    labelled transactions show it ranks fraud clearly worse than the active
    model (`challenger_decision`). `force` activates it regardless. Either way
    it is stored with its `evaluation`.
    """
    data = training_features(since=since, limit=limit, warmup=warmup)
    forest = forest_train(data.matrix)
    candidate = PackedForest.from_isolation_forest(forest)
    quantiles = score_quantiles(forest, data.matrix)
    active = model_active_row()
    active_model = None
    if active is not None:
        try:
            active_model = model_load(active)
        except ModelIntegrityError as exc:
            logger.warning("not comparing with %s: %s", active.version, exc)
    evaluation = challenger_decision(
        truth=data.labelled_fraud,
        candidate_scores=-candidate.score_samples(data.labelled),
        active_scores=(
            active_model.anomaly_scores(data.labelled)
            if active_model is not None and len(data.labelled)
            else None
        ),
        active_version=active.version if active is not None else None,
        min_labels=settings.MODEL_ACTIVATION_MIN_LABELS,
        max_ap_drop=settings.MODEL_ACTIVATION_MAX_AP_DROP,
    )
    classifier = None
    try:
        classifier = classifier_train(
            data.supervised,
            data.supervised_fraud,
            min_labels=settings.MODEL_CLASSIFIER_MIN_LABELS,
            trained_until=max(data.supervised_timestamps, default=None),
        )
        evaluation["classifier"] = classifier_summary(classifier.info)
    except TooFewLabels as exc:
        evaluation["classifier"] = (
            f"not trained: {exc} among the training window's transactions older "
            f"than MODEL_LABEL_MATURITY_SECONDS "
            f"({_duration_text(settings.MODEL_LABEL_MATURITY_SECONDS)})"
        )
    recent = training_features(
        limit=RECENT_CHECK_ROWS, warmup=RECENT_CHECK_WARMUP
    ).matrix
    rate = active_rate = None
    if len(recent) >= RECENT_CHECK_MIN_ROWS:
        # What the version alone (forest and classifier) would flag.
        config = scoring_config_from_db(model=None)
        percentiles = np.interp(
            -candidate.score_samples(recent), quantiles, QUANTILE_GRID
        )
        rate = model_alone_flag_rate(
            config,
            percentiles,
            None if classifier is None else classifier.probabilities(recent),
        )
        if active_model is not None:
            active_rate = model_alone_flag_rate(
                config,
                active_model.percentiles(active_model.anomaly_scores(recent)),
                None
                if active_model.classifier is None
                else active_model.classifier.probabilities(recent),
            )
    rate_ok, rate_reason = flag_rate_decision(
        rate=rate,
        active_rate=active_rate,
        max_rate=settings.MODEL_ACTIVATION_MAX_FLAG_RATE,
        max_rise=settings.MODEL_ACTIVATION_MAX_FLAG_RISE,
        rows=len(recent),
    )
    evaluation["recent_flag_rate"] = None if rate is None else round(rate, 4)
    evaluation["active_recent_flag_rate"] = (
        None if active_rate is None else round(active_rate, 4)
    )
    if not rate_ok:
        evaluation["activate"] = False
        evaluation["reason"] = rate_reason
    else:
        evaluation["reason"] = f"{evaluation['reason']}; {rate_reason}"
    lost = _classifier_loss(active_model, classifier, evaluation["classifier"])
    if lost and evaluation["activate"]:
        evaluation["activate"] = False
        evaluation["reason"] = lost
    collapse = _label_feed_collapse(classifier)
    if collapse and evaluation["activate"]:
        evaluation["activate"] = False
        evaluation["reason"] = f"classifier: {collapse}"
    comparison = _classifier_comparison(data, classifier, active_model)
    if comparison is not None:
        evaluation["classifier_comparison"] = comparison
        if not comparison["activate"] and evaluation["activate"]:
            evaluation["activate"] = False
            evaluation["reason"] = f"classifier: {comparison['reason']}"
    if force and not evaluation["activate"]:
        evaluation = {
            **evaluation,
            "activate": True,
            "reason": "forced over: " + evaluation["reason"],
        }
    row = model_version_create(
        forest=forest,
        classifier=classifier,
        quantiles=quantiles,
        features=feature_quantiles(data.matrix),
        sample_count=len(data.matrix),
        trained_from=min(data.timestamps),
        trained_until=max(data.timestamps),
        activate=evaluation["activate"],
        evaluation=evaluation,
        # Judged against `active`: not activated over another version made
        # active meanwhile (a rollback in admin), unless forced.
        replacing=(
            ANY_ACTIVE if force else (active.version if active is not None else None)
        ),
    )
    if not row.evaluation["activate"]:
        logger.warning(
            "model %s stored but not activated (%s kept): %s",
            row.version,
            active.version if active is not None else "no model",
            row.evaluation["reason"],
        )
    return row.version
