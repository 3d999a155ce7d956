"""Offline backtest: replay a file through the scoring core with isolated state.

The live tables are never touched: state lives in an InMemoryStateStore, the model
is trained in memory on the part before `train_until`, and only the rules and
thresholds are read from the database (so a backtest judges the live rule set).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from detection.classifier import (
    FraudClassifier,
    TooFewLabels,
    classifier_summary,
    classifier_train,
)
from detection.explain import feature_quantiles
from detection.forest import PackedForest
from detection.lists import EMPTY as EMPTY_LISTS
from detection.registry import LoadedModel, forest_train, score_quantiles
from detection.scoring import (
    ScoringConfig,
    Verdict,
    transaction_score_batch,
)
from detection.services import features_extend, features_replay
from detection.services.training import message_as_scored
from detection.state import FEATURE_NAMES, InMemoryStateStore
from transactions.cells import cell_unquote
from transactions.messages import (
    SCORING_INPUT_FIELDS,
    MessageError,
    TransactionMessage,
    text_encodable,
    transaction_message_parse,
)
from transactions.models import Transaction

BATCH_SIZE = 1000
# Rows read from the ledger per database round trip.
LEDGER_CHUNK = 2000


@dataclass
class Rejected:
    """An input line the backtest could not read, with its error."""

    line: int
    error: str
    raw: str


@dataclass
class BacktestResult:
    """Verdicts of the scored part, aligned with its messages, and the figures."""

    scored: list[TransactionMessage]
    verdicts: list[Verdict]
    trained_on: int
    model_version: str
    metrics: dict = field(default_factory=dict)
    # What the classifier learned from (or why none was trained).
    classifier: str = ""
    # With a draft rule set: its verdicts and figures, from the same model and
    # the same starting card states.
    draft_verdicts: list[Verdict] | None = None
    draft_metrics: dict | None = None


NOT_UTF8 = "not UTF-8 text (save the file as UTF-8)"


def _printable(text: str) -> str:
    """Return text with undecodable bytes shown as U+FFFD (for the rejects file)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _records(path: Path) -> Iterator[tuple[int, str, dict | None, str | None]]:
    """Yield (line number, raw text, decoded object or None, decode error).

    A line that is not UTF-8 or not JSON (too deeply nested included) is yielded
    with its error, to be rejected; it never stops the read.
    """
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8" writes one) is not part of
    # the first column's name.
    with path.open(
        newline="", encoding="utf-8-sig", errors="surrogateescape"
    ) as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            for number, row in enumerate(reader, start=2):
                text = json.dumps(row)
                values = "".join(v for v in row.values() if isinstance(v, str))
                if not text_encodable(values):
                    yield number, _printable(text), None, NOT_UTF8
                    continue
                # The export's quoting (a leading apostrophe) taken off.
                clean = {
                    k: cell_unquote(v) if isinstance(v, str) else v
                    for k, v in row.items()
                    if k is not None and v != ""
                }
                # The dashboard's CSV export carries the analysts' and
                # chargebacks' verdict as latest_label: ground truth here.
                label = clean.get("latest_label")
                if "is_fraud" not in clean and label in ("fraud", "legit"):
                    clean["is_fraud"] = label == "fraud"
                yield number, text, clean, None
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not text_encodable(line):
                yield number, _printable(line), None, NOT_UTF8
                continue
            try:
                yield number, line, json.loads(line), None
            except (json.JSONDecodeError, RecursionError) as exc:
                yield number, line, None, f"not JSON: {exc}"


def backtest_read(
    path: Path, *, currencies: Collection[str] | None = None
) -> tuple[list[TransactionMessage], list[Rejected]]:
    """Return the valid messages of a JSON Lines or CSV file, and the rejected lines.

    Duplicate transaction ids are kept once (the first), as the live path does;
    so is a currency without an exchange rate (`currencies`) rejected.
    """
    messages: list[TransactionMessage] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for number, raw, data, error in _records(path):
        if data is None:
            rejected.append(Rejected(number, error or "unreadable", raw[:2000]))
            continue
        try:
            message = transaction_message_parse(data, currencies=currencies)
        except MessageError as exc:
            rejected.append(Rejected(number, str(exc), raw[:2000]))
            continue
        if message.transaction_id in seen:
            rejected.append(Rejected(number, "duplicate transaction_id", raw[:2000]))
            continue
        seen.add(message.transaction_id)
        messages.append(message)
    messages.sort(key=lambda m: m.timestamp)
    return messages, rejected


def _loaded(
    forest: IsolationForest,
    matrix: np.ndarray,
    classifier: FraudClassifier | None = None,
) -> LoadedModel:
    digest = hashlib.sha256(
        np.concatenate([t.tree_.threshold for t in forest.estimators_]).tobytes()
    ).hexdigest()[:8]
    return LoadedModel(
        version=f"backtest-{len(matrix)}-{digest}",
        forest=PackedForest.from_isolation_forest(forest),
        feature_names=FEATURE_NAMES,
        score_quantiles=score_quantiles(forest, matrix),
        feature_quantiles=feature_quantiles(matrix),
        classifier=classifier,
    )


def _classifier(
    matrix: np.ndarray,
    known: np.ndarray,
    fraud: np.ndarray,
    notes: list[str],
) -> FraudClassifier | None:
    """Return the classifier fitted on the training rows `known` marks (those
    old enough: `_model_trained`), `fraud` their truth, or None with the reason
    in `notes`."""
    try:
        classifier = classifier_train(
            matrix[known],
            fraud[known],
            min_labels=settings.MODEL_CLASSIFIER_MIN_LABELS,
        )
    except TooFewLabels as exc:
        notes.append(f"not trained: {exc}")
        return None
    notes.append(classifier_summary(classifier.info))
    return classifier


def _model_trained(
    matrix: np.ndarray,
    *,
    fraud: np.ndarray,
    mature: np.ndarray,
    notes: list[str],
) -> LoadedModel | None:
    """Return the model trained on the training part's feature rows, as a
    retrain trains it, or None when every row is a fraud.

    The arrays are aligned with `matrix` (event order): `fraud`, the row's
    latest label is fraud; `mature`, the row is older than the label maturity
    at train_until. As a retrain's (detection.services.training), the
    classifier learns from the mature rows only, a row without a label counting
    as legitimate (a fraud would have come back as a chargeback by then):
    on a ledger fed by chargebacks, the only labels are frauds. Raise
    ValueError when too few rows are left to train the forest on."""
    # As a retrain: confirmed frauds are not fitted (the forest learns normal).
    normal = ~fraud
    if not normal.any():
        return None
    classifier = _classifier(matrix, mature, fraud, notes)
    return _loaded(forest_train(matrix[normal]), matrix[normal], classifier)


def outcomes_known_before(label_maturity_seconds: float) -> datetime:
    """Return the time before which a scored payment without a label counts as
    legitimate in a backtest's figures: its chargeback would have come by now
    (the label maturity, as a retrain presumes). Younger unlabelled payments
    are pending: left out of precision, recall and the rest."""
    return timezone.now() - timedelta(seconds=label_maturity_seconds)


def _score(
    test: list[TransactionMessage],
    store: InMemoryStateStore,
    config: ScoringConfig,
    progress: Callable[[int], None] | None,
) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for start in range(0, len(test), BATCH_SIZE):
        batch = test[start : start + BATCH_SIZE]
        batch_verdicts, _ = transaction_score_batch(batch, store=store, config=config)
        verdicts.extend(batch_verdicts)
        if progress:
            progress(len(batch))
    return verdicts


def _store_copy(store: InMemoryStateStore) -> InMemoryStateStore:
    copy = InMemoryStateStore()
    copy.states = {user_id: state.copy() for user_id, state in store.states.items()}
    return copy


def backtest_run(
    messages: list[TransactionMessage],
    *,
    train_until: datetime,
    config: ScoringConfig,
    progress: Callable[[int], None] | None = None,
    draft: ScoringConfig | None = None,
    label_maturity_seconds: float = 0.0,
) -> BacktestResult:
    """Train on messages before `train_until`, then score the rest in event order.

    `config` supplies rules and thresholds; its model is replaced by the one
    trained here, and the block/allow lists and the merchant_fraud counts are
    left out: both are today's knowledge (lists made, frauds confirmed after the
    fact), which would flatter a replay of the past. In the training window a
    transaction the file labels fraud does not teach its card's profile, as a
    confirmed fraud does not live. The classifier beside the forest is fitted on
    the training part's mature rows, unlabelled ones as legitimate
    (`_model_trained`); the figures count a scored row without a label as
    legitimate once older than the label maturity (`outcomes_known_before`).
    `progress` is called with the number of rows just scored. A `draft` config
    (rules and thresholds: `draft_config`) is scored too, with the same model
    from the same card states, for a side-by-side comparison. As a retrain, the
    forest is not fitted on the training part's frauds, and with
    `label_maturity_seconds` the classifier learns only from rows that old at
    `train_until` (0: the file's labels are known at once, as in `make run`;
    production's default is 30 days).
    """
    classifier_notes: list[str] = []
    cut = next(
        (i for i, m in enumerate(messages) if m.timestamp >= train_until),
        len(messages),
    )
    train, test = messages[:cut], messages[cut:]
    matrix, store = features_replay(
        train, rates=config.rates, learns=[not m.is_fraud for m in train]
    )
    mature_before = train_until - timedelta(seconds=label_maturity_seconds)
    known_before = outcomes_known_before(label_maturity_seconds)
    model = _model_trained(
        matrix,
        fraud=np.array([m.is_fraud is True for m in train], dtype=bool),
        mature=np.array([m.timestamp <= mature_before for m in train], dtype=bool),
        notes=classifier_notes,
    )
    run_config = dataclasses.replace(
        config, model=model, lists=EMPTY_LISTS, merchant_fraud={}
    )
    draft_store = _store_copy(store) if draft is not None else None
    verdicts = _score(test, store, run_config, progress)
    result = BacktestResult(
        scored=test,
        verdicts=verdicts,
        trained_on=len(train),
        model_version=run_config.model_version,
        classifier=classifier_notes[0] if classifier_notes else "",
    )
    result.metrics = backtest_metrics(test, verdicts, known_before)
    if draft is not None:
        draft_config = dataclasses.replace(
            draft, model=model, lists=EMPTY_LISTS, merchant_fraud={}
        )
        result.draft_verdicts = _score(test, draft_store, draft_config, progress)
        result.draft_metrics = backtest_metrics(
            test, result.draft_verdicts, known_before
        )
    return result


class DraftError(ValueError):
    """Raise when a draft rule set cannot be used, saying what is wrong."""


def draft_config(data: object, *, live: ScoringConfig) -> ScoringConfig:
    """Return the live config with a draft's rule and threshold changes.

    `data` is the draft file's JSON: {"rules": {code: {"enabled", "weight",
    "params"}}, "thresholds": {"suspicious", "fraud"}}, every key optional. A
    rule not named keeps its stored settings (enabled or not); named params are
    merged into its stored ones and checked as admin checks them. Raise
    DraftError naming every problem.
    """
    from detection.models import DecisionThresholds, Rule
    from detection.rules import RULE_TYPES, RuleParamsError, rule_params_validate
    from detection.scoring import ActiveRule, rule_active

    if not isinstance(data, dict) or set(data) - {"rules", "thresholds"}:
        raise DraftError('A draft is a JSON object with "rules" and/or "thresholds".')
    errors: list[str] = []
    stored = {row.code: row for row in Rule.objects.all()}
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        raise DraftError('"rules" must map rule codes to their settings.')
    active: list[ActiveRule] = []
    # In code order, as the live config reads its rows (reasons list in it).
    for code in sorted(RULE_TYPES):
        rule_type = RULE_TYPES[code]
        row = stored.get(code)
        # As live: a rule without a row does not score.
        enabled = row.enabled if row is not None else False
        weight = row.weight if row is not None else rule_type.weight
        params = dict(row.params) if row is not None else rule_type.params_defaults()
        if code not in rules:
            # As live scorers apply it (a row with bad params is skipped).
            if enabled and (rule := rule_active(row)) is not None:
                active.append(rule)
            continue
        try:
            rule_params_validate(code, params)
        except RuleParamsError:
            # Its stored params are bad: the draft's apply to the defaults.
            params = rule_type.params_defaults()
        change = rules[code]
        if not isinstance(change, dict) or set(change) - {
            "enabled",
            "weight",
            "params",
        }:
            errors.append(f'{code}: expected "enabled", "weight" and/or "params".')
            continue
        enabled = change.get("enabled", enabled)
        weight = change.get("weight", weight)
        if not isinstance(enabled, bool):
            errors.append(f"{code}: enabled must be true or false.")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            errors.append(f"{code}: weight must be a number between 0 and 1.")
        elif not 0 <= weight <= 1:
            errors.append(f"{code}: weight must be between 0 and 1, not {weight}.")
        changed = change.get("params", {})
        if not isinstance(changed, dict):
            errors.append(f"{code}: params must be an object.")
            continue
        try:
            params = rule_params_validate(code, {**params, **changed})
        except RuleParamsError as exc:
            errors.append(f"{code}: {exc}")
            continue
        if enabled is True:
            active.append(ActiveRule(rule_type, params, float(weight)))
    unknown = sorted(set(rules) - set(RULE_TYPES))
    if unknown:
        errors.append(
            f"Unknown rule code(s) {', '.join(unknown)}; known: "
            f"{', '.join(RULE_TYPES)}."
        )
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict) or set(thresholds) - {"suspicious", "fraud"}:
        errors.append('"thresholds" takes "suspicious" and/or "fraud".')
        thresholds = {}
    suspicious = thresholds.get("suspicious", live.suspicious_threshold)
    fraud = thresholds.get("fraud", live.fraud_threshold)
    if not DecisionThresholds.ordered(suspicious, fraud):
        errors.append(
            f"Thresholds need {DecisionThresholds.RULE} (got {suspicious!r}, "
            f"{fraud!r})."
        )
    if errors:
        raise DraftError("; ".join(errors))
    return dataclasses.replace(
        live,
        rules=tuple(active),
        suspicious_threshold=float(suspicious),
        fraud_threshold=float(fraud),
    )


class MetricsTally:
    """`backtest_metrics` added up a batch at a time: a streamed replay keeps
    the counts and, per row of known outcome, its label, risk score and whether
    it was flagged (17 bytes), never the messages or the verdicts.

    A row's outcome is its latest label; without one, it is legitimate when
    older than `known_before` (its chargeback would have come: the label
    maturity, as a retrain presumes) and pending otherwise. Precision, recall,
    average precision and ROC AUC are over the known outcomes: over the
    labelled rows alone, a ledger whose only labels are chargebacks (frauds)
    would show a precision near 1 whatever the rules flag. `known_before` None
    counts only labelled rows (every unlabelled one pending).
    """

    def __init__(self, known_before: datetime | None = None) -> None:
        self.known_before = known_before
        self.scored = 0
        self.by_status: Counter[str] = Counter()
        self.rule_hits: Counter[str] = Counter()
        self.labelled = 0
        self.pending = 0
        self.labels = array("b")
        self.scores = array("d")
        self.flagged = array("b")

    def add(
        self, messages: Iterable[TransactionMessage], verdicts: Iterable[Verdict]
    ) -> None:
        """Count a batch's verdicts (aligned with its messages)."""
        known_before = self.known_before
        for message, verdict in zip(messages, verdicts, strict=True):
            self.scored += 1
            self.by_status[verdict.status] += 1
            self.rule_hits.update(verdict.reason_codes)
            label = message.is_fraud
            if label is not None:
                self.labelled += 1
            elif known_before is not None and message.timestamp <= known_before:
                label = False
            else:
                self.pending += 1
                continue
            self.labels.append(bool(label))
            self.scores.append(verdict.risk_score)
            self.flagged.append(verdict.status != "legit")

    def figures(self) -> dict:
        """Return counts by status, hits per rule and, with known outcomes,
        quality figures."""
        metrics: dict = {
            "scored": self.scored,
            "by_status": dict(sorted(self.by_status.items())),
            "rule_hits": dict(self.rule_hits.most_common()),
        }
        if not self.labels:
            if self.pending:
                metrics["pending"] = self.pending
            return metrics
        labels = np.array(self.labels, dtype=bool)
        scores = np.array(self.scores)
        flagged = np.array(self.flagged, dtype=bool)
        true_positives = int((labels & flagged).sum())
        metrics["labelled"] = self.labelled
        metrics["fraud"] = int(labels.sum())
        metrics["presumed_legit"] = len(labels) - self.labelled
        metrics["pending"] = self.pending
        metrics["precision"] = (
            round(true_positives / int(flagged.sum()), 4) if flagged.any() else None
        )
        metrics["recall"] = (
            round(true_positives / int(labels.sum()), 4) if labels.any() else None
        )
        if labels.any() and not labels.all():
            metrics["average_precision"] = round(
                float(average_precision_score(labels, scores)), 4
            )
            metrics["roc_auc"] = round(float(roc_auc_score(labels, scores)), 4)
        return metrics


def backtest_metrics(
    messages: list[TransactionMessage],
    verdicts: list[Verdict],
    known_before: datetime | None = None,
) -> dict:
    """Return counts by status, hits per rule and, with known outcomes, quality
    figures (MetricsTally)."""
    tally = MetricsTally(known_before)
    tally.add(messages, verdicts)
    return tally.figures()


def amount_only_baseline(
    train: list[TransactionMessage], test: list[TransactionMessage]
) -> dict:
    """Return AP and ROC AUC of an Isolation Forest on the amount alone.

    This is the predecessor's approach, kept as the yardstick for our detector.
    """
    forest = IsolationForest(n_estimators=100, random_state=42)
    forest.fit(np.array([[m.amount_float] for m in train]))
    scores = -forest.score_samples(np.array([[m.amount_float] for m in test]))
    labels = np.array([bool(m.is_fraud) for m in test])
    return {
        "average_precision": round(float(average_precision_score(labels, scores)), 4),
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
    }


def verdict_line(verdict: Verdict) -> str:
    """Return one output line of the backtest."""
    return json.dumps(
        {
            "transaction_id": verdict.transaction_id,
            "risk_score": verdict.risk_score,
            "status": verdict.status,
            "reasons": verdict.reasons,
            "model_score": verdict.model_score,
        },
        separators=(",", ":"),
    )


def ledger_rows(*, since: datetime, until: datetime) -> Iterator[TransactionMessage]:
    """Yield the stored transactions with event times in [since, until), in
    event order, for a backtest: each as it was scored (amounts as compared:
    `message_as_scored`), with its latest label as `is_fraud` (None: not
    labelled), the ground truth a CSV export gives `manage.py backtest`.

    Read LEDGER_CHUNK rows at a time as plain values (no model instances);
    only what the caller keeps stays in memory."""
    rows = (
        Transaction.objects.filter(timestamp__gte=since, timestamp__lt=until)
        .with_latest_label()
        .order_by("timestamp", "id")
        .values(*SCORING_INPUT_FIELDS, "amount_base", "latest_label_fraud")
    )
    for row in rows.iterator(chunk_size=LEDGER_CHUNK):
        label = row.pop("latest_label_fraud")
        message = message_as_scored(row)
        message.is_fraud = label
        yield message


def ledger_messages(*, since: datetime, until: datetime) -> list[TransactionMessage]:
    """Return `ledger_rows` as a list (for a replay that needs them all)."""
    return list(ledger_rows(since=since, until=until))


def _batches(
    messages: Iterable[TransactionMessage], size: int
) -> Iterator[list[TransactionMessage]]:
    batch: list[TransactionMessage] = []
    for message in messages:
        batch.append(message)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ledger_backtest(
    *,
    since: datetime,
    until: datetime,
    train_until: datetime,
    config: ScoringConfig,
    draft: ScoringConfig | None = None,
    label_maturity_seconds: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Backtest the stored ledger as `backtest_run` backtests a file, streaming:
    return the API's answer (BacktestResultSerializer's fields).

    The same replay, model and figures as `backtest_run(ledger_messages(...))`,
    but the ledger is read a chunk at a time: the training part is kept only
    as its feature matrix (and three flags a row), the scored part not at all
    (its figures are added up as it goes, live and draft scored batch by batch
    from their own card states). So a million-row replay holds no million
    messages or verdicts. `progress` is called with the number of
    transactions just replayed (training or scoring; each counted once, with
    or without a draft). Raise ValueError when too few transactions before
    train_until are left to train on.
    """
    mature_before = train_until - timedelta(seconds=label_maturity_seconds)
    known_before = outcomes_known_before(label_maturity_seconds)
    store = InMemoryStateStore()
    blocks = [np.empty((0, len(FEATURE_NAMES)))]
    fraud, mature = array("b"), array("b")
    for batch in _batches(ledger_rows(since=since, until=train_until), 5000):
        # In the training window a labelled fraud does not teach its profile.
        learns = [not m.is_fraud for m in batch]
        blocks.append(features_extend(store, batch, rates=config.rates, learns=learns))
        for message in batch:
            fraud.append(message.is_fraud is True)
            mature.append(message.timestamp <= mature_before)
        if progress:
            progress(len(batch))
    matrix = np.vstack(blocks)
    del blocks
    notes: list[str] = []
    model = _model_trained(
        matrix,
        fraud=np.array(fraud, dtype=bool),
        mature=np.array(mature, dtype=bool),
        notes=notes,
    )
    trained_on = len(matrix)
    del matrix, fraud, mature
    run_config = dataclasses.replace(
        config, model=model, lists=EMPTY_LISTS, merchant_fraud={}
    )
    draft_store = draft_run = draft_tally = None
    if draft is not None:
        draft_store = _store_copy(store)
        draft_run = dataclasses.replace(
            draft, model=model, lists=EMPTY_LISTS, merchant_fraud={}
        )
        draft_tally = MetricsTally(known_before)
    tally = MetricsTally(known_before)
    for batch in _batches(ledger_rows(since=train_until, until=until), BATCH_SIZE):
        verdicts, _ = transaction_score_batch(batch, store=store, config=run_config)
        tally.add(batch, verdicts)
        if draft_run is not None:
            verdicts, _ = transaction_score_batch(
                batch, store=draft_store, config=draft_run
            )
            draft_tally.add(batch, verdicts)
        if progress:
            progress(len(batch))
    return {
        "replayed": trained_on + tally.scored,
        "trained_on": trained_on,
        "model_version": run_config.model_version,
        "classifier": notes[0] if notes else "",
        "live": tally.figures(),
        "draft": draft_tally.figures() if draft_tally is not None else None,
    }
