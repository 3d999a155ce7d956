"""Verdicts: rules, model and classifier blended into a risk, a status and reasons.

`verdicts_score` is the one function that turns transactions into verdicts, for
the stream, the API, the backtest and the activation gate of a retrain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from detection.explain import unusual_features, unusual_text
from detection.lists import (
    LIST_ALLOW_CODE,
    LIST_ALLOW_LABEL,
    LIST_BLOCK_CODE,
    LIST_BLOCK_LABEL,
    ListHit,
)
from detection.rules import (
    LEARNED_FRAUD,
    MODEL_ANOMALY,
    learned_reason,
    model_reason,
    percent_text,
)
from detection.scoring.config import ActiveRule, ScoringConfig
from detection.scoring.features import (
    Prepared,
    event_order,
    feature_matrix,
    state_fold,
    transaction_prepare,
)
from detection.state import FEATURE_DTYPE, FeatureRow, UserState, UserStateStore
from transactions.messages import TransactionMessage

STATUS_LEGIT, STATUS_SUSPICIOUS, STATUS_FRAUD = "legit", "suspicious", "fraud"
NOTE_RULES_ONLY = "No active model: scored by rules alone."
# Below this the classifier's share of a flagged verdict's risk is not noted.
LEARNED_NOTE_MIN_RISK = 0.01


@dataclass
class Verdict:
    """The outcome of scoring one transaction."""

    transaction_id: str
    risk_score: float
    status: str
    reasons: list[dict]
    model_score: float | None
    model_version: str
    notes: list[str] = field(default_factory=list)
    row: FeatureRow | None = None
    # The status the rules and model gave, before the block and allow lists.
    rules_status: str = ""
    # The model's input as computed here (FEATURE_NAMES order, little-endian
    # float32: what scikit-learn's trees compare anyway), stored with the
    # verdict so that a retrain fits exactly what scoring saw.
    vector: bytes | None = None

    @property
    def teaches(self) -> bool:
        """Whether the transaction teaches its card's profile: not when judged
        fraud, nor when the allow list overrode a flag of the rules (an allowed
        4,000 on a 25-a-day card must not make 4,000 look normal once the entry
        is gone): the profile learns what the rules accepted on their own."""
        if self.status == STATUS_FRAUD:
            return False
        return self.rules_status in ("", self.status)

    @property
    def reason_codes(self) -> list[str]:
        """Return the codes of the rules that fired, each once (a card, merchant
        and country all blocked are three reasons of one code)."""
        return list(dict.fromkeys(reason["code"] for reason in self.reasons))

    @property
    def features(self) -> dict:
        """Return the readable features (built on demand: only what-if shows them)."""
        return self.row.summary() if self.row is not None else {}


def _risk(
    fired: list[tuple[ActiveRule, dict]],
    model_rule: ActiveRule | None,
    model_output: tuple[float, float] | None,
    learned: tuple[ActiveRule, float] | None = None,
) -> tuple[float, float, float]:
    """Return (risk, the part the model added, the part the classifier added).

    `learned` is the learned_fraud rule with the classifier's probability of
    fraud: it adds `weight * probability`, continuously, so that it ranks every
    payment (its reason is named from its threshold on, or when it helped flag).
    """
    # Noisy-OR: each fired rule removes a share of the remaining "not risky" mass,
    # so two independent signals add up without ever passing 1.
    keep = 1.0
    for rule, _reason in fired:
        if rule.rule_type.code not in (MODEL_ANOMALY, LEARNED_FRAUD):
            keep *= 1.0 - rule.weight
    rules_risk = 1.0 - keep
    learned_added = 0.0
    if learned is not None:
        keep *= 1.0 - learned[0].weight * learned[1]
        learned_added = round((1.0 - keep) - rules_risk, 6)
        rules_risk = 1.0 - keep
    if model_rule is not None and model_output is not None:
        floor, ceiling = model_rule.params["floor"], model_rule.params["ceiling"]
        # The model adds risk continuously from floor to ceiling (percentiles of
        # training scores), so it ranks transactions even below the threshold at
        # which it is named a reason.
        ramp = min(max((model_output[1] - floor) / (ceiling - floor), 0.0), 1.0)
        keep *= 1.0 - model_rule.weight * ramp
    risk = 1.0 - keep
    return round(risk, 6), round(risk - rules_risk, 6), learned_added


def model_alone_flag_rate(
    config: ScoringConfig,
    percentiles: np.ndarray,
    probabilities: np.ndarray | None = None,
) -> float | None:
    """Return the share of rows a model version alone would flag (risk >=
    suspicious, no other rule firing).

    `percentiles` are its forest's percentiles of some rows' anomaly scores,
    `probabilities` its classifier's probabilities of fraud for the same rows
    (None without one). The forest adds `weight * ramp`, the classifier
    `weight * p` (see `_risk`), each while its rule is enabled. None when both
    rules are disabled or there are no rows.
    """
    rules = {r.rule_type.code: r for r in config.rules}
    model_rule, learned_rule = rules.get(MODEL_ANOMALY), rules.get(LEARNED_FRAUD)
    if probabilities is None:
        learned_rule = None
    if (model_rule is None and learned_rule is None) or not len(percentiles):
        return None
    keep = np.ones(len(percentiles))
    if model_rule is not None:
        floor, ceiling = model_rule.params["floor"], model_rule.params["ceiling"]
        ramp = np.clip((percentiles - floor) / (ceiling - floor), 0.0, 1.0)
        keep *= 1.0 - model_rule.weight * ramp
    if learned_rule is not None:
        keep *= 1.0 - learned_rule.weight * np.asarray(probabilities)
    return float(np.mean(1.0 - keep >= config.suspicious_threshold))


def _risk_named(
    fired: list[tuple[ActiveRule, dict]],
    rule: ActiveRule,
    added: float,
    below: Callable[[], tuple[dict, str] | None],
) -> list[tuple[ActiveRule, dict]]:
    """Return `fired` with `rule`'s reason carrying the risk it added.

    The model and the classifier add risk below the threshold at which they are
    reasons on their own. When `rule` did not fire, `below()` says whether it is
    named anyway: None leaves it out, else (its reason, why it is named).
    """
    reason = next((found for fired_rule, found in fired if fired_rule is rule), None)
    if reason is None:
        named = below()
        if named is None:
            return fired
        reason, why = named
        reason["detail"] += why
        fired = [*fired, (rule, reason)]
    reason["detail"] += f"; adds {added:.2f} to the risk"
    reason["values"]["risk_added"] = added
    return fired


def _model_named(
    fired: list[tuple[ActiveRule, dict]],
    model_rule: ActiveRule,
    model_output: tuple[float, float],
    model_added: float,
    status: str,
) -> list[tuple[ActiveRule, dict]]:
    """Name the model when its risk helped flag the transaction, so that no
    flagged verdict is unexplained (`_risk_named`)."""

    def below() -> tuple[dict, str] | None:
        if status == STATUS_LEGIT:
            return None
        return model_reason(model_output, model_rule.params), (
            f"; below the {percent_text(model_rule.params['threshold'])} from "
            "which it is a reason on its own, named because its risk helped flag "
            "this"
        )

    return _risk_named(fired, model_rule, model_added, below)


def transaction_score_batch(
    messages: Sequence[TransactionMessage],
    *,
    store: UserStateStore,
    config: ScoringConfig,
    apply_state: bool = True,
) -> tuple[list[Verdict], dict[str, UserState]]:
    """Return verdicts for a batch (aligned with input) and the users' new states.

    State is read from `store`, advanced in event order, and returned for the
    caller to persist (`store.states_put`) in the same database transaction as the
    verdicts. The model runs once over the whole batch.
    """
    states = store.states_get({message.user_id for message in messages})
    verdicts = verdicts_score(
        messages, states=states, config=config, apply_state=apply_state
    )
    return verdicts, states


def verdicts_score(
    messages: Sequence[TransactionMessage],
    *,
    states: Mapping[str, UserState],
    config: ScoringConfig,
    apply_state: bool = True,
) -> list[Verdict]:
    """Return verdicts for a batch (aligned with input) from states already read.

    The states are advanced in place, in event order, unless `apply_state` is
    False (then private copies are). A transaction judged fraud does not teach
    its card's profile (UserState), so a card's next transaction must wait for
    the verdict of its previous one: the batch is scored in waves, the first
    transaction of every card in the batch, then the second, and so on, with one
    model call per wave (as many waves as the busiest card has transactions in
    the batch). Per card this is exactly event order.
    """
    if not apply_state:
        states = {uid: state.copy() for uid, state in states.items()}
    waves: list[list[int]] = []
    position: dict[str, int] = {}
    for index in event_order(messages):
        user_id = messages[index].user_id
        wave = position.get(user_id, 0)
        position[user_id] = wave + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(index)
    verdicts: list[Verdict | None] = [None] * len(messages)
    for wave in waves:
        prepared = [
            transaction_prepare(messages[i], states[messages[i].user_id], config.rates)
            for i in wave
        ]
        for index, item, verdict in zip(
            wave, prepared, _judge(prepared, config), strict=True
        ):
            state_fold(
                states[item.message.user_id],
                item,
                learn=verdict.teaches,
            )
            verdicts[index] = verdict
    return verdicts  # type: ignore[return-value]


def _status(risk: float, config: ScoringConfig) -> str:
    if risk >= config.fraud_threshold:
        return STATUS_FRAUD
    if risk >= config.suspicious_threshold:
        return STATUS_SUSPICIOUS
    return STATUS_LEGIT


def _learned_named(
    fired: list[tuple[ActiveRule, dict]],
    rule: ActiveRule,
    row: FeatureRow,
    added: float,
    risk: float,
    status: str,
    config: ScoringConfig,
) -> list[tuple[ActiveRule, dict]]:
    """Name the classifier below its threshold only where its risk decided the
    status: it adds a little to every payment (weight x p), and a 0.2%
    probability is no reason to list (`_risk_named`)."""

    def below() -> tuple[dict, str] | None:
        share = rule.weight * row.fraud_probability
        # The risk without it (noisy-OR: it multiplied "not risky" by 1 - share).
        without = 1.0 - (1.0 - risk) / (1.0 - share) if share < 1.0 else 0.0
        lower = _status(without, config)
        if lower == status:
            return None
        return learned_reason(row.fraud_probability, rule.params), (
            "; below the threshold from which it is a reason on its own, named "
            f"because without it this would be {lower}"
        )

    return _risk_named(fired, rule, added, below)


def _model_explained(
    fired: list[tuple[ActiveRule, dict]],
    vector: np.ndarray,
    row: FeatureRow,
    config: ScoringConfig,
) -> None:
    """Add to the model's and the classifier's reasons, when they have one, what
    was unusual about the payment (in place).

    Only named model reasons (a few percent of payments) pay for this. For the
    classifier it is context for the analyst (what stands out in the payment),
    not what the classifier weighed.
    """
    unusual = None
    for rule, reason in fired:
        if rule.rule_type.code in (MODEL_ANOMALY, LEARNED_FRAUD):
            if unusual is None:
                unusual = unusual_features(
                    vector,
                    row,
                    config.model.feature_quantiles,
                    base_currency=settings.BASE_CURRENCY,
                )
            reason["values"]["unusual"] = unusual
            if unusual or rule.rule_type.code == MODEL_ANOMALY:
                reason["detail"] += unusual_text(unusual)
            else:
                reason["detail"] += (
                    "; no single feature of it stands out against training payments"
                )


def _judge(prepared: Sequence[Prepared], config: ScoringConfig) -> list[Verdict]:
    """Return the verdicts of prepared rows: the model once over all, then rules."""
    model_outputs: list[tuple[float, float] | None] = [None] * len(prepared)
    matrix = feature_matrix(prepared)
    stored = np.ascontiguousarray(matrix, dtype=FEATURE_DTYPE)
    if config.model is not None and prepared:
        scores = config.model.anomaly_scores(matrix)
        percentiles = config.model.percentiles(scores)
        model_outputs = [
            (float(score), float(pct))
            for score, pct in zip(scores, percentiles, strict=True)
        ]
    model_rule = next(
        (rule for rule in config.rules if rule.rule_type.code == MODEL_ANOMALY), None
    )
    learned_rule = next(
        (rule for rule in config.rules if rule.rule_type.code == LEARNED_FRAUD), None
    )
    classifier = config.model.classifier if config.model is not None else None
    if classifier is None:
        learned_rule = None
    elif learned_rule is not None and prepared:
        probabilities = classifier.probabilities(matrix)
        for item, probability in zip(prepared, probabilities.tolist(), strict=True):
            item.row.fraud_probability = probability
    verdicts = []
    now = time.time()
    merchant_fraud = config.merchant_fraud
    # Coordinates without a country, while a country is listed: one lookup.
    nearest = config.lists.nearest_cities(prepared)
    for index, (item, model_output) in enumerate(
        zip(prepared, model_outputs, strict=True)
    ):
        if merchant_fraud:
            item.row.merchant_id = item.message.merchant_id
            item.row.merchant_confirmed_fraud = merchant_fraud.get(
                item.message.merchant_id, 0
            )
        fired = []
        for rule in config.rules:
            reason = rule.rule_type.evaluate(item.row, rule.params, model_output)
            if reason is not None:
                fired.append((rule, reason))
        learned = (
            None if learned_rule is None else (learned_rule, item.row.fraud_probability)
        )
        risk, model_added, learned_added = _risk(
            fired, model_rule, model_output, learned
        )
        model_score = model_output[0] if model_output else None
        status = _status(risk, config)
        if model_added > 0:
            fired = _model_named(fired, model_rule, model_output, model_added, status)
        if learned_added > 0:
            fired = _learned_named(
                fired, learned_rule, item.row, learned_added, risk, status, config
            )
        if config.model is not None and config.model.feature_quantiles is not None:
            _model_explained(fired, matrix[index], item.row, config)
        notes = list(item.notes)
        if config.model is None:
            notes.append(NOTE_RULES_ONLY)
        if (
            learned_added >= LEARNED_NOTE_MIN_RISK
            and status != STATUS_LEGIT
            and not any(rule is learned_rule for rule, _reason in fired)
        ):
            # Flagged without the classifier as a reason: its share of the risk
            # is still said, so that the reasons and notes add up to the risk.
            notes.append(
                f"The classifier on labels added {learned_added:.2f} to the risk "
                f"({item.row.fraud_probability:.1%} probability of fraud), below "
                "the threshold from which it is a reason."
            )
        listed = []
        rules_status = status
        if config.lists:
            hits = config.lists.hits(
                item.message, now, country=item.country, nearest=nearest[index]
            )
            if hits:
                risk, status, listed = _lists_apply(hits, risk, status, notes)
        verdicts.append(
            Verdict(
                transaction_id=item.message.transaction_id,
                risk_score=risk,
                status=status,
                reasons=[
                    {
                        "code": rule.rule_type.code,
                        "label": rule.rule_type.name,
                        "weight": rule.weight,
                        **reason,
                    }
                    for rule, reason in fired
                ]
                + listed,
                model_score=None if model_score is None else round(model_score, 6),
                model_version=config.model_version,
                notes=notes,
                row=item.row,
                rules_status=rules_status,
                vector=stored[index].tobytes(),
            )
        )
    return verdicts


def _lists_apply(
    hits: list[ListHit], risk: float, status: str, notes: list[str]
) -> tuple[float, str, list[dict]]:
    """Return (risk, status, reasons) after the block and allow lists.

    A block makes the verdict fraud at risk 1 and is its reason (the rules'
    reasons stay beside it); an allow makes it legit, keeping the rules' risk
    and reasons, with a note saying what they would have decided. Block wins.
    """
    blocks = [hit for hit in hits if hit.action == "block"]
    if blocks:
        return (
            1.0,
            STATUS_FRAUD,
            [
                {
                    "code": LIST_BLOCK_CODE,
                    "label": LIST_BLOCK_LABEL,
                    "weight": 1.0,
                    "detail": f"{hit.kind} {hit.shown} is on the block list: "
                    f"{hit.note}",
                    "values": {"kind": hit.kind, "value": hit.value},
                }
                for hit in blocks
            ],
        )
    hit = hits[0]
    notes.append(
        f"{hit.kind.capitalize()} {hit.shown} is on the allow list ({hit.note}): "
        f"judged legit; by the rules and model alone it was {status} at risk "
        f"{risk:.3f}."
    )
    # Named as a reason too, so that the table, the export and `rule=allowlist`
    # show which legit verdicts the list decided.
    allowed = {
        "code": LIST_ALLOW_CODE,
        "label": LIST_ALLOW_LABEL,
        "weight": 0.0,
        "detail": f"{hit.kind} {hit.shown} is on the allow list: {hit.note} (the "
        f"rules and model alone: {status} at risk {risk:.3f})",
        "values": {"kind": hit.kind, "value": hit.value, "rules_status": status},
    }
    return risk, STATUS_LEGIT, [allowed]
