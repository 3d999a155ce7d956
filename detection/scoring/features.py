"""Features: each transaction against its card's state, folded in event order.

The stream, the API, the backtest and training all compute features here
(`transaction_features_batch`, or `transaction_prepare` wave by wave in
`detection.scoring.verdicts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from detection.geo import city_coordinates
from detection.scoring.config import base_rate
from detection.state import FEATURE_NAMES, FeatureRow, UserState
from transactions.messages import TransactionMessage

NOTE_LATE = (
    "Arrived after a later located transaction of this card: travel not checked."
)


@dataclass(slots=True)
class Prepared:
    message: TransactionMessage
    row: FeatureRow
    notes: list[str]
    # What the state learns from it: the place resolved, the amount converted.
    latitude: float | None
    longitude: float | None
    country: str


def _resolve_location(message: TransactionMessage, notes: list[str]) -> tuple:
    if message.latitude is not None:
        return message.latitude, message.longitude, message.country
    if message.location:
        found = city_coordinates(message.location, message.country)
        if found:
            return found[0], found[1], message.country or found[2]
        where = f" in {message.country}" if message.country else ""
        notes.append(
            f"Unknown location {message.location!r}{where}: geo features skipped."
        )
    return None, None, message.country


def _local_hour(moment: datetime, longitude: float | None) -> int:
    """Return the hour of day where the card was used (solar time), else UTC's.

    Night means the cardholder's night: 03:00 UTC is midday in Tokyo.
    Solar time (15 degrees of longitude an hour) is within an hour or two of the
    civil time zone, which is enough for "is this the middle of the night".
    """
    if longitude is None:
        return moment.hour
    return (moment.hour + round(longitude / 15.0)) % 24


def transaction_prepare(
    message: TransactionMessage, state: UserState, rates: Mapping[str, float]
) -> Prepared:
    """Return one message's features against its user's state (left unchanged)."""
    notes: list[str] = []
    latitude, longitude, country = _resolve_location(message, notes)
    epoch = message.timestamp.timestamp()
    rate = rates.get(message.currency)
    if rate is None:
        rate = 1.0
        notes.append(
            f"No exchange rate for {message.currency}: amount compared unconverted."
        )
    amount = message.amount_float / rate
    if latitude is not None and state.located_after(epoch):
        notes.append(NOTE_LATE)
    row = state.features(
        epoch=epoch,
        amount=amount,
        hour=_local_hour(message.timestamp, longitude),
        latitude=latitude,
        longitude=longitude,
        country=country,
        merchant_id=message.merchant_id,
        merchant_category=message.merchant_category,
        channel=message.channel,
    )
    return Prepared(message, row, notes, latitude, longitude, country)


def _lesson(item: Prepared) -> dict:
    """Return what a card's state takes from a prepared transaction (`apply`'s
    arguments): the place as resolved, the amount as converted."""
    message = item.message
    return {
        "epoch": item.row.epoch,
        "amount": item.row.amount,
        "latitude": item.latitude,
        "longitude": item.longitude,
        "location": message.location,
        "country": item.country,
        "merchant_id": message.merchant_id,
        "merchant_category": message.merchant_category,
        "channel": message.channel,
    }


def state_fold(state: UserState, item: Prepared, *, learn: bool = True) -> None:
    """Advance the state past a prepared transaction (learn: see UserState)."""
    state.apply(learn=learn, **_lesson(item))


def state_learn_later(
    state: UserState, message: TransactionMessage, *, rates: Mapping[str, float]
) -> None:
    """Teach a card's profile a transaction it counted but did not learn from.

    Prepared as when it was scored (place resolved, amount converted); see
    `UserState.learn_later`.
    """
    state.learn_later(**_lesson(transaction_prepare(message, state, rates)))


def event_order(messages: Sequence[TransactionMessage]) -> list[int]:
    """Return the indexes of `messages` in the order their payments happened."""
    return sorted(range(len(messages)), key=lambda i: messages[i].timestamp)


def transaction_features_batch(
    messages: Sequence[TransactionMessage],
    *,
    states: dict[str, UserState],
    apply_state: bool = True,
    rates: Mapping[str, float] | None = None,
    learns: Sequence[bool] | None = None,
) -> list[Prepared]:
    """Return each message's features, folding them into `states` in event order.

    Output is aligned with the input; with apply_state=False the states are
    still advanced on private copies, so a what-if batch sees its own earlier rows.
    `learns` (aligned with the input; default all True) says which transactions
    teach the profile: a training replay passes False for those stored as fraud,
    as the scorer did (`verdicts_score` decides it from each verdict).
    Amounts are converted to BASE_CURRENCY with `rates` (units per base unit;
    default: the config's base alone). The stream and the API refuse currencies
    without a rate; one that still gets here is compared unconverted, and noted.
    """
    if not apply_state:
        states = {uid: state.copy() for uid, state in states.items()}
    if rates is None:
        rates = base_rate()
    prepared: list[Prepared | None] = [None] * len(messages)
    for index in event_order(messages):
        message = messages[index]
        state = states[message.user_id]
        item = prepared[index] = transaction_prepare(message, state, rates)
        state_fold(state, item, learn=True if learns is None else learns[index])
    return prepared  # type: ignore[return-value]


def feature_matrix(prepared: Sequence[Prepared]) -> np.ndarray:
    """Return the model input matrix of prepared rows."""
    if not prepared:
        return np.empty((0, len(FEATURE_NAMES)))
    return np.array([item.row.vector() for item in prepared], dtype=np.float64)
