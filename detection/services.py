"""Detection workflows that write: score-and-record, what-if, retrain, seed history."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction

from detection.alerts import alert_deliveries_enqueue
from detection.classifier import TooFewLabels, classifier_summary, classifier_train
from detection.events import labels_announce
from detection.explain import feature_quantiles
from detection.forest import PackedForest
from detection.models import DeadLetter
from detection.profiles import OrmStateStore
from detection.records import RecordError, timestamp_not_after, value_decode
from detection.registry import (
    QUANTILE_GRID,
    ModelIntegrityError,
    challenger_decision,
    forest_train,
    model_active_row,
    model_load,
    model_version_create,
    score_quantiles,
)
from detection.scoring import (
    ScoringConfig,
    Verdict,
    feature_matrix,
    model_alone_flag_rate,
    scoring_config_from_db,
    state_learn_later,
    transaction_features_batch,
    verdicts_score,
)
from detection.state import FEATURE_NAMES, InMemoryStateStore, UserState
from transactions.messages import SCORING_INPUT_FIELDS, TransactionMessage
from transactions.models import Label, Transaction, reason_codes_text
from transactions.selectors import transaction_ids_existing
from transactions.services import label_create, transactions_record

logger = logging.getLogger(__name__)


@dataclass
class RecordedBatch:
    """What one score-and-record call did.

    `created` holds the new ledger rows as column values keyed by attribute name
    (what `Transaction(**row)` takes), oldest first: the stream's hot path builds
    no model instances (14 us each, 9% of a batch in `bench_stream`). `rescored`
    is True when another writer got in between scoring and storing, so the batch
    was scored again inside the write transaction.
    """

    created: list[dict]
    duplicates: list[str]
    states: list[UserState]
    rescored: bool = False


@dataclass
class ScoredBatch:
    """A batch scored but not stored yet, with what its verdicts were built on."""

    messages: list[TransactionMessage]
    duplicates: list[str]
    verdicts: list[Verdict]
    states: dict[str, UserState]
    # Each user's stored version (UserState.version) when the state was read.
    versions: dict[str, tuple[int, int]]


def transaction_row(
    message: TransactionMessage,
    verdict: Verdict,
    *,
    scored_at: datetime,
    source: str,
) -> dict:
    """Return the ledger row (column values) of a scored message."""
    return {
        "transaction_id": message.transaction_id,
        "user_id": message.user_id,
        "amount": message.amount,
        "amount_base": round(verdict.row.amount, 2),
        "currency": message.currency,
        "timestamp": message.timestamp,
        "merchant_id": message.merchant_id,
        "merchant_category": message.merchant_category,
        "channel": message.channel,
        "location": message.location,
        "latitude": message.latitude,
        "longitude": message.longitude,
        "country": message.country,
        "is_fraud": message.is_fraud,
        "risk_score": verdict.risk_score,
        "status": verdict.status,
        "reasons": verdict.reasons,
        "reason_codes": reason_codes_text(verdict.reason_codes),
        "notes": verdict.notes,
        "model_score": verdict.model_score,
        "model_version": verdict.model_version,
        "scored_at": scored_at,
        "received_at": message.received_at or scored_at,
        "ingest_source": source,
        # verdicts_score folds a transaction into the profile unless judged fraud.
        "profile_learned": verdict.teaches,
    }


def transaction_batch_score(
    *,
    messages: Sequence[TransactionMessage],
    store: OrmStateStore,
    config: ScoringConfig,
) -> ScoredBatch:
    """Score the messages that are not stored yet; write nothing.

    Messages whose transaction_id is already stored, or repeated within the batch,
    are set aside unscored, so a replay changes neither the ledger nor any user's
    state. The users' states are advanced in place (in the store's cache too):
    a caller that does not go on to store them (`transaction_batch_score_record`
    does) must call `store.cache_clear()`.

    The states are read BEFORE the stored ids: a transaction another writer
    stores in between is then either in the state read and among the ids found,
    or in neither, and then its user's version has moved on by commit time.
    """
    states = store.states_get({m.user_id for m in messages})
    versions = {uid: state.version for uid, state in states.items()}
    existing = transaction_ids_existing(
        transaction_ids=[m.transaction_id for m in messages]
    )
    seen: set[str] = set()
    unique: list[TransactionMessage] = []
    duplicates: list[str] = []
    for message in messages:
        if message.transaction_id in existing or message.transaction_id in seen:
            duplicates.append(message.transaction_id)
            continue
        seen.add(message.transaction_id)
        unique.append(message)
    # Only users with something new are scored, checked and written.
    users = {m.user_id for m in unique}
    states = {uid: state for uid, state in states.items() if uid in users}
    versions = {uid: version for uid, version in versions.items() if uid in users}
    verdicts = verdicts_score(unique, states=states, config=config)
    return ScoredBatch(unique, duplicates, verdicts, states, versions)


def scored_batch_current(*, scored: ScoredBatch, store: OrmStateStore) -> bool:
    """Return True if no other writer moved one of these users on since the batch
    was scored.

    Call inside the write transaction: on SQLite it holds the database's write
    lock, on PostgreSQL this locks the users' rows, so the answer holds until
    commit. Every transaction stored for a user advances the user's version, so
    another writer that stored one of these ids for the same user after the
    states were read shows here. The same id stored for ANOTHER user (ids reused
    across cards) does not; the ledger's unique transaction_id refuses the insert
    (IntegrityError, the whole batch rolls back) and the retried batch finds the
    id stored.
    """
    return store.versions_get(scored.versions) == scored.versions


def transaction_batch_score_record(
    *,
    messages: Sequence[TransactionMessage],
    store: OrmStateStore,
    config: ScoringConfig,
    source: str,
) -> RecordedBatch:
    """Score new messages and store verdicts and user state in ONE DB transaction.

    Scoring is optimistic: it runs before the write transaction, and inside it
    `scored_batch_current` checks that no other writer moved one of the users on
    in between. If one did, the batch is scored again from the stored state,
    inside the transaction (`rescored`). So consumers of one
    SQLite database, where a writer holds the whole database, score in parallel
    and take turns only to write; the users' partitions keep conflicts rare.
    Called inside an outer transaction, it scores there directly.

    If anything fails, the store's cache is cleared: the states it handed out may
    have been advanced, and the database is the truth again.
    """
    scored = None
    rescored = False
    try:
        if not transaction.get_connection().in_atomic_block:
            scored = transaction_batch_score(
                messages=messages, store=store, config=config
            )
        with transaction.atomic():
            if scored is None or not scored_batch_current(scored=scored, store=store):
                if scored is not None:
                    # The cached states were advanced from stale ones.
                    store.cache_clear()
                    rescored = True
                scored = transaction_batch_score(
                    messages=messages, store=store, config=config
                )
            scored_at = datetime.now(UTC)
            rows = [
                transaction_row(m, v, scored_at=scored_at, source=source)
                for m, v in zip(scored.messages, scored.verdicts, strict=True)
            ]
            transactions_record(rows=rows)
            store.states_put(scored.states.values())
            if config.webhooks:
                alert_deliveries_enqueue(rows, config.webhooks, now=scored_at)
    except BaseException:
        # Scoring advanced cached states in place; the database has none of it.
        store.cache_clear()
        raise
    store.cache_commit(scored.states.values())
    if rescored:
        logger.info(
            "another writer stored some of these %d users' transactions while the "
            "batch was scored: scored again under the write lock",
            len(scored.states),
        )
    return RecordedBatch(
        created=rows,
        duplicates=scored.duplicates,
        states=list(scored.states.values()),
        rescored=rescored,
    )


# What makes two messages with one transaction_id the same payment. The time is
# left out: a producer that retries may stamp the copy anew, or leave it out.
PAYMENT_IDENTITY = ("user_id", "amount", "currency")


def transaction_id_conflicts(
    messages: Sequence[TransactionMessage],
) -> list[str | None]:
    """Return, for each message, why it reuses a stored id for another payment.

    None where it does not (the id is the stored payment's, or not stored).
    For messages found already stored (`RecordedBatch.duplicates`): a replay of
    the same payment is fine and changes nothing, but the same id on another
    card, amount or currency is a different payment that was not scored. The
    stream makes it a dead letter and the API a 409, instead of answering with
    the stored payment's verdict.
    """
    wanted = {m.transaction_id for m in messages}
    stored = {
        row["transaction_id"]: row
        for row in Transaction.objects.filter(transaction_id__in=wanted).values(
            "transaction_id", *PAYMENT_IDENTITY
        )
    }
    conflicts: list[str | None] = []
    for message in messages:
        row = stored.get(message.transaction_id)
        differ = [
            name
            for name in PAYMENT_IDENTITY
            if row is not None and getattr(message, name) != row[name]
        ]
        if not differ:
            conflicts.append(None)
            continue
        theirs = ", ".join(f"{name} {row[name]}" for name in differ)
        ours = ", ".join(f"{name} {getattr(message, name)}" for name in differ)
        conflicts.append(
            f"transaction_id {message.transaction_id!r} is already stored for "
            f"another payment ({theirs}; this one: {ours}); ids must not be "
            "reused. Not scored."
        )
    return conflicts


@dataclass
class RedriveReport:
    """What a dead-letter redrive did."""

    scored: int = 0
    already_stored: int = 0
    still_invalid: int = 0
    # Valid, but its id is stored for another payment: left unresolved.
    conflicting: int = 0
    # Chargeback letters (detection.chargebacks): labelled now, or whose
    # transaction is still not stored (left unresolved).
    labelled: int = 0
    unmatched: int = 0

    def add(self, other: RedriveReport) -> None:
        """Add another report's counts to this one."""
        for name, value in dataclasses.asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def summary(self) -> str:
        """Return the counts in words (admin message, command output)."""
        text = (
            f"{self.scored:,} scored, {self.already_stored:,} already stored, "
            f"{self.still_invalid:,} still invalid, {self.conflicting:,} reusing "
            "the id of another payment"
        )
        if self.labelled or self.unmatched:
            text += (
                f"; chargebacks: {self.labelled:,} labelled, {self.unmatched:,} "
                "whose transaction is still not stored"
            )
        return text

    @property
    def unresolved(self) -> int:
        """Return how many letters stay unresolved."""
        return self.still_invalid + self.conflicting + self.unmatched


def dead_letters_redrive(
    *, letters: Sequence[DeadLetter], config: ScoringConfig
) -> RedriveReport:
    """Decode dead letters again; score and store the ones that are valid now.

    For after the cause is fixed (a producer bug, a validation change). Letters that
    decode go through the live score-and-record path (source "redrive", their
    original received_at) and are marked resolved; letters still invalid keep their
    row with the new error in `resolution`. Nothing is deleted, and resolved letters
    are skipped, so a redrive may run again.
    """
    from detection.chargebacks import ALREADY_STORED, LABELLED, chargebacks_redrive

    report = RedriveReport()
    pending = [letter for letter in letters if letter.resolved_at is None]
    # Letters from the chargeback topic are reports that label, not payments.
    chargebacks = [
        letter for letter in pending if letter.topic == settings.KAFKA_CHARGEBACKS_TOPIC
    ]
    pending = [
        letter for letter in pending if letter.topic != settings.KAFKA_CHARGEBACKS_TOPIC
    ]
    valid: list[tuple[DeadLetter, TransactionMessage]] = []
    not_after = timestamp_not_after()
    for letter in pending:
        try:
            message = value_decode(
                bytes(letter.raw_value),
                not_after=not_after,
                currencies=config.currencies,
                received_at=letter.received_at,
            )
        except RecordError as exc:
            letter.resolution = f"Still invalid: {exc}"
            report.still_invalid += 1
            continue
        message.received_at = letter.received_at
        valid.append((letter, message))
    with transaction.atomic():
        result = transaction_batch_score_record(
            messages=[message for _letter, message in valid],
            store=OrmStateStore(use_cache=False),
            config=config,
            source="redrive",
        )
        created = {row["transaction_id"] for row in result.created}
        conflicts = transaction_id_conflicts([m for _letter, m in valid])
        resolved_at = datetime.now(UTC)
        for (letter, message), conflict in zip(valid, conflicts, strict=True):
            if conflict:
                letter.resolution = conflict
                report.conflicting += 1
                continue
            letter.resolved_at = resolved_at
            if message.transaction_id in created:
                created.discard(message.transaction_id)
                letter.resolution = f"Scored as {message.transaction_id}."
                report.scored += 1
            else:
                letter.resolution = f"Already stored as {message.transaction_id}."
                report.already_stored += 1
        if chargebacks:
            for outcome in chargebacks_redrive(letters=chargebacks).outcomes:
                if outcome == LABELLED:
                    report.labelled += 1
                elif outcome == ALREADY_STORED:
                    report.already_stored += 1
                elif outcome.startswith("Still invalid"):
                    report.still_invalid += 1
                else:
                    report.unmatched += 1
        DeadLetter.objects.bulk_update(
            [*pending, *chargebacks], ["resolved_at", "resolution"]
        )
    return report


# What-if without a time, on a card whose feed runs ahead: bounds of the gap.
WHAT_IF_GAP_DEFAULT_SECONDS = 3600.0
WHAT_IF_GAP_MIN_SECONDS = 60.0
WHAT_IF_GAP_MAX_SECONDS = 86400.0


def _usual_gap_seconds(state: UserState) -> float:
    """Return the median time between the card's recent transactions (1 h when
    it has fewer than two), within 1 min .. 1 day."""
    times = sorted(pair[0] for pair in state.recent)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    if not gaps:
        return WHAT_IF_GAP_DEFAULT_SECONDS
    median = statistics.median(gaps)
    return min(max(median, WHAT_IF_GAP_MIN_SECONDS), WHAT_IF_GAP_MAX_SECONDS)


def _fmt_gap(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def transaction_what_if(
    *, message: TransactionMessage, config: ScoringConfig, timed: bool = True
) -> tuple[Verdict, UserState]:
    """Score a hypothetical transaction against stored history; change nothing.

    Return the verdict and the user's state as it was before the transaction.
    With `timed=False` (the caller gave no time), the transaction is judged now,
    or, when the card's last transaction is later (event times of a simulated or
    delayed feed can run ahead of the clock), one usual gap of the card after it:
    "what if this card paid next, at its own pace". Never a late arrival that
    skips the travel check, nor a payment a second after the last one (which
    velocity and the model would read as a burst).
    """
    states = OrmStateStore(use_cache=False, read_only=True).states_get(
        {message.user_id}
    )
    state = states[message.user_id]
    notes = []
    if state.count == 0:
        notes.append(
            f"No stored history for card {message.user_id!r} (a new card, or a "
            "mistyped id): judged as its first transaction."
        )
    last = state.last_epoch
    if not timed and last is not None and last >= message.timestamp.timestamp():
        gap = _usual_gap_seconds(state)
        message.timestamp = datetime.fromtimestamp(last + gap, tz=UTC)
        notes.append(
            f"No time given: judged {_fmt_gap(gap)} after the card's last "
            "transaction (its usual gap), at "
            f"{message.timestamp:%Y-%m-%d %H:%M:%S} UTC, as the last one is dated "
            "later than now."
        )
    # With apply_state=False the states stay as they were read, unadvanced.
    (verdict,) = verdicts_score(
        [message], states=states, config=config, apply_state=False
    )
    verdict.notes[:0] = notes
    return verdict, state


def transaction_label(
    *,
    record: Transaction,
    is_fraud: bool,
    source: str = Label.Source.ANALYST,
    note: str = "",
    reference: str = "",
    created_by=None,
    announce: bool = True,
) -> Label:
    """Record a label on a stored transaction (latest wins) and return it.

    A transaction judged fraud did not teach its card's profile (UserState;
    `Transaction.profile_learned` is False). The first label saying it was
    legitimate teaches it now, in the same database transaction, so that the
    cardholder's next purchases are compared with it (a trip abroad confirmed by
    the cardholder stops reading as impossible travel). Later relabels change
    nothing in the profile: a profile cannot unlearn, and learning twice would
    count the purchase twice. The API, the dashboard and the admin all label
    through here; the verdict stays as it was. Once committed, open dashboards
    are told (`announce=False`: the caller announces, as the chargeback
    consumer does once per batch).
    """
    with transaction.atomic():
        # The conditional update claims the lesson: of two labels at once (a
        # double click, the API and the admin) only one finds it unlearned.
        # Transactions that never touched a profile (seed_transactions) and
        # verdicts stored before the flag existed (their profile learned them
        # then) are marked learned and teach nothing.
        teach = (
            not is_fraud
            and Transaction.objects.filter(pk=record.pk, profile_learned=False).update(
                profile_learned=True
            )
            == 1
        )
        label = label_create(
            transaction=record,
            is_fraud=is_fraud,
            source=source,
            note=note,
            reference=reference,
            created_by=created_by,
        )
        if teach:
            store = OrmStateStore(use_cache=False)
            state = store.states_get({record.user_id})[record.user_id]
            message = TransactionMessage(
                **{name: getattr(record, name) for name in SCORING_INPUT_FIELDS}
            )
            rates = scoring_config_from_db(model=None).rates
            state_learn_later(state, message, rates=rates)
            store.states_put([state])
        if announce:
            transaction.on_commit(lambda: labels_announce([label]))
    return label


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
        chunk = ordered[start : start + 5000]
        states = store.states_get({m.user_id for m in chunk})
        prepared = transaction_features_batch(
            chunk,
            states=states,
            rates=rates,
            learns=None if ordered_learns is None else ordered_learns[start:][:5000],
        )
        blocks.append(feature_matrix(prepared))
    return np.vstack(blocks), store


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


def training_features(
    *, since: datetime | None = None, limit: int = 200_000, warmup: int | None = None
) -> TrainingSet:
    """Return the feature matrix to train on, with the labelled rows to judge by.

    The newest `limit` transactions (from `since`) are the training window. They
    are replayed in event order after up to `warmup` (default: `limit`) older
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
    fields = (*SCORING_INPUT_FIELDS, "latest_label_fraud", "profile_learned")
    base = Transaction.objects.with_latest_label().order_by("-timestamp")
    window = base if since is None else base.filter(timestamp__gte=since)
    train_rows = list(window.values(*fields)[:limit])
    warm_rows = []
    if train_rows:
        oldest = train_rows[-1]["timestamp"]
        warm_limit = limit if warmup is None else warmup
        warm_rows = list(base.filter(timestamp__lt=oldest).values(*fields)[:warm_limit])
    rows = [*reversed(warm_rows), *reversed(train_rows)]  # event order
    labels = [row.pop("latest_label_fraud") for row in rows]
    # As live: a transaction judged fraud did not teach its card's profile,
    # unless an analyst found it legitimate since (`transaction_label`).
    learns = [row.pop("profile_learned") for row in rows]
    labelled = np.array([label is not None for label in labels], dtype=bool)
    confirmed = np.array([label is True for label in labels], dtype=bool)
    fit = (np.arange(len(rows)) >= len(warm_rows)) & ~confirmed
    messages = [TransactionMessage(**row) for row in rows]
    rates = scoring_config_from_db(model=None).rates
    # features_replay sorts by event time, stably: its rows stay aligned with `fit`.
    matrix, _ = features_replay(messages, rates=rates, learns=learns)
    timestamps = [m.timestamp for m, keep in zip(messages, fit, strict=True) if keep]
    mature_before = datetime.now(UTC) - timedelta(
        seconds=settings.MODEL_LABEL_MATURITY_SECONDS
    )
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
        )
        evaluation["classifier"] = classifier_summary(classifier.info)
    except TooFewLabels as exc:
        evaluation["classifier"] = (
            f"not trained: {exc} among the training window's transactions older "
            f"than MODEL_LABEL_MATURITY_SECONDS "
            f"({settings.MODEL_LABEL_MATURITY_SECONDS:g} s)"
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
    )
    if not evaluation["activate"]:
        logger.warning(
            "model %s stored but not activated (%s kept): %s",
            row.version,
            active.version if active is not None else "no model",
            evaluation["reason"],
        )
    return row.version


def rules_seed_defaults() -> None:
    """Store every known rule with its default parameters, and the thresholds.

    Rows that exist are left as they are. The data migration did this once; tests
    that flush the database call it to start from the same state.
    """
    from detection.models import DecisionThresholds, Rule
    from detection.rules import RULE_TYPES

    for code, rule_type in RULE_TYPES.items():
        Rule.objects.get_or_create(
            code=code,
            defaults={
                "name": rule_type.name,
                "description": rule_type.description,
                "weight": rule_type.weight,
                "params": rule_type.params_defaults(),
                "enabled": rule_type.enabled_by_default,
            },
        )
    DecisionThresholds.objects.get_or_create(
        pk=1, defaults={"suspicious": 0.5, "fraud": 0.8}
    )
