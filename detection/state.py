"""Per-user state (keyed state, as a stream processor keeps it) and the feature row.

`UserState` is plain Python so that the stream, the API and the backtest compute
features with the same code. Stores load and save it: `InMemoryStateStore` here (the
backtest, training replays) and `detection.profiles.OrmStateStore` (stream and API).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from detection.geo import haversine_km

RECENT_WINDOW_SECONDS = 24 * 3600
# Bounded so that a card-testing bot cannot grow a profile without limit.
RECENT_MAX_EVENTS = 500
KNOWN_COUNTRIES_MAX = 20
KNOWN_MERCHANTS_MAX = 50
KNOWN_CATEGORIES_MAX = 30
# Floor on the time between two transactions when computing speed: clock skew and
# same-second events would otherwise imply infinite speed.
SPEED_MIN_SECONDS = 60.0
NO_PREVIOUS_SECONDS = 30 * 24 * 3600.0

FEATURE_NAMES: tuple[str, ...] = (
    "log_amount",
    "amount_zscore",
    "log_amount_ratio",
    "log_distance_prev_km",
    "log_speed_kmh",
    "log_distance_home_km",
    "count_10m",
    "count_1h",
    "count_24h",
    "log_amount_24h",
    "hour_offpeak",
    "new_country",
    "new_merchant",
    "log_seconds_since_prev",
    "log_history_count",
    "channel_novelty",
    "new_category",
)
# How a feature vector is stored with its verdict (Transaction.features):
# little-endian float32, FEATURE_NAMES order. A change to FEATURE_NAMES must
# clear the stored vectors (a data migration setting them to NULL): retrains
# fall back to replaying the ledger where vectors are missing.
FEATURE_DTYPE = "<f4"


@dataclass(slots=True)
class FeatureRow:
    """Features of one transaction against its user's state before it."""

    epoch: float
    amount: float
    typical_amount: float
    history_count: int
    amount_zscore: float
    distance_prev_km: float | None
    speed_kmh: float | None
    seconds_since_prev: float
    previous_location: str
    distance_home_km: float | None
    count_10m: int
    count_1h: int
    count_24h: int
    amount_24h: float
    # Local (solar) hour where the card was used: scoring.features._local_hour.
    hour: int
    new_country: bool
    new_merchant: bool
    recent_times: list[float]
    channel_novelty: float = 0.0
    new_category: bool = False
    # Not a model feature: confirmed frauds at this merchant lately, set by the
    # scorer from analysts' and chargeback labels (detection.merchants).
    merchant_confirmed_fraud: int = 0
    merchant_id: str = ""
    # Not a model feature: the classifier's probability of fraud (the
    # learned_fraud rule's input), set by the scorer; None without a classifier.
    fraud_probability: float | None = None

    def vector(self) -> list[float]:
        """Return the model's input, in FEATURE_NAMES order."""
        return [
            math.log1p(self.amount),
            self.amount_zscore,
            math.log(self.amount / self.typical_amount) if self.typical_amount else 0.0,
            math.log1p(self.distance_prev_km or 0.0),
            math.log1p(self.speed_kmh or 0.0),
            math.log1p(self.distance_home_km or 0.0),
            float(self.count_10m),
            float(self.count_1h),
            float(self.count_24h),
            math.log1p(self.amount_24h),
            # Hours away from mid-afternoon, 0 (14:00) .. 1 (02:00).
            abs(((self.hour - 14 + 12) % 24) - 12) / 12.0,
            float(self.new_country),
            float(self.new_merchant),
            math.log1p(self.seconds_since_prev),
            math.log1p(self.history_count),
            self.channel_novelty,
            float(self.new_category),
        ]

    def summary(self) -> dict:
        """Return the human-readable features shown with a verdict."""
        return {
            "typical_amount": round(self.typical_amount, 2),
            "history_count": self.history_count,
            "distance_prev_km": _round(self.distance_prev_km),
            "speed_kmh": _round(self.speed_kmh),
            "distance_home_km": _round(self.distance_home_km),
            "count_10m": self.count_10m,
            "count_1h": self.count_1h,
            "count_24h": self.count_24h,
            "amount_24h": round(self.amount_24h, 2),
            "new_country": self.new_country,
            "new_merchant": self.new_merchant,
            "new_category": self.new_category,
            "channel_novelty": round(self.channel_novelty, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(slots=True)
class UserState:
    """One user's running profile: amount statistics, places, recent activity.

    Every transaction counts (`count`, the state's version) and enters the
    recent-activity window: velocity counts attempts, and a burst of declined card
    tests is still a burst. Only transactions not judged fraud teach the profile
    (`learned` of them): the amount statistics, last and home place, known
    countries, merchants and categories, and channel mix. So a fraudster's
    purchase in Lagos neither makes Lagos the card's last place (the cardholder's
    next purchase at home would read as impossible travel, and the fraudster's
    next one in Lagos as no travel at all) nor raises the typical amount.
    """

    user_id: str
    # Transactions applied.
    count: int = 0
    # Transactions folded into the profile (those not judged fraud).
    learned: int = 0
    log_amount_mean: float = 0.0
    # Welford's running sum of squared deviations of log(amount).
    log_amount_m2: float = 0.0
    last_epoch: float | None = None
    last_latitude: float | None = None
    last_longitude: float | None = None
    last_located_epoch: float | None = None
    last_location: str = ""
    home_latitude: float | None = None
    home_longitude: float | None = None
    home_location: str = ""
    countries: list[str] = field(default_factory=list)
    merchants: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    # Transactions per channel (pos, ecom, atm): how this card is usually used.
    channels: dict[str, int] = field(default_factory=dict)
    # [epoch seconds, amount] of the last 24 h, oldest first.
    recent: list[list[float]] = field(default_factory=list)

    def copy(self) -> UserState:
        """Return an independent copy (stores hand out copies; see OrmStateStore)."""
        return UserState(
            user_id=self.user_id,
            count=self.count,
            learned=self.learned,
            log_amount_mean=self.log_amount_mean,
            log_amount_m2=self.log_amount_m2,
            last_epoch=self.last_epoch,
            last_latitude=self.last_latitude,
            last_longitude=self.last_longitude,
            last_located_epoch=self.last_located_epoch,
            last_location=self.last_location,
            home_latitude=self.home_latitude,
            home_longitude=self.home_longitude,
            home_location=self.home_location,
            countries=list(self.countries),
            merchants=list(self.merchants),
            categories=list(self.categories),
            channels=dict(self.channels),
            # `apply` builds new [epoch, amount] pairs and never edits one, so the
            # copies may share them (a deep copy was 20% of `states_get`).
            recent=list(self.recent),
        )

    @property
    def version(self) -> tuple[int, int]:
        """Return what changes whenever the state does (cached copies compare it).

        Each transaction applied moves `count` on; a later lesson (a fraud
        verdict marked legitimate: `learn_later`) moves only `learned` on.
        """
        return (self.count, self.learned)

    @property
    def typical_amount(self) -> float:
        """Return the geometric mean amount (robust to the odd big purchase)."""
        return math.exp(self.log_amount_mean) if self.learned else 0.0

    @property
    def log_amount_std(self) -> float:
        """Return the standard deviation of log(amount)."""
        return (
            math.sqrt(self.log_amount_m2 / (self.learned - 1))
            if self.learned > 1
            else 0.0
        )

    def located_after(self, epoch: float) -> bool:
        """Return True if the last located transaction happened after `epoch`.

        A transaction that arrives late (after a later one was applied) is not
        compared with that later location, and does not replace it: the travel
        between them would run backwards in time.
        """
        return self.last_located_epoch is not None and epoch < self.last_located_epoch

    def _seconds_since_previous(self, epoch: float, recent_times: list[float]) -> float:
        """Return the gap to the card's latest payment at or before `epoch`.

        In event order that is the last one applied. A payment arriving late
        (after a later one was applied) measures from the latest recent payment
        before it, as a replay in event order (training) reads it, not 0; with
        none in the window, the previous one is older than the window's start,
        and the gap to that start is its lower bound (for a card with more than
        RECENT_MAX_EVENTS payments a day the window is shorter, and this is an
        estimate); a payment older than the window's start reads a day, and a
        card's first payment, arriving after its later ones, reads no previous.
        """
        if self.last_epoch is None:
            return NO_PREVIOUS_SECONDS
        if epoch >= self.last_epoch:
            return epoch - self.last_epoch
        before = bisect.bisect_right(recent_times, epoch)
        if before:
            return epoch - recent_times[before - 1]
        if self.count <= len(recent_times):
            # The window holds every payment of the card: none came before.
            return NO_PREVIOUS_SECONDS
        window_start = self.last_epoch - RECENT_WINDOW_SECONDS
        if epoch >= window_start:
            return epoch - window_start
        # Over a day late: what came before it is forgotten; a day's gap.
        return float(RECENT_WINDOW_SECONDS)

    def features(
        self,
        *,
        epoch: float,
        amount: float,
        hour: int,
        latitude: float | None,
        longitude: float | None,
        country: str,
        merchant_id: str,
        merchant_category: str = "",
        channel: str = "",
    ) -> FeatureRow:
        """Return the features of a transaction against this state (unchanged)."""
        # Windows reach both ways: a transaction that arrives late (after later
        # ones were applied) counts its neighbours on either side, so a burst is
        # seen whatever order its records arrive in. In event order nothing is
        # later, and this is the plain trailing window.
        recent_times = [pair[0] for pair in self.recent]
        count_10m = count_1h = count_24h = 0
        amount_24h = 0.0
        for moment, value in self.recent:
            age = abs(epoch - moment)
            if age <= RECENT_WINDOW_SECONDS:
                count_24h += 1
                amount_24h += value
                if age <= 3600:
                    count_1h += 1
                    if age <= 600:
                        count_10m += 1
        distance_prev = speed = distance_home = None
        if (
            latitude is not None
            and self.last_latitude is not None
            and not self.located_after(epoch)
        ):
            distance_prev = haversine_km(
                self.last_latitude, self.last_longitude, latitude, longitude
            )
            elapsed = max(epoch - (self.last_located_epoch or epoch), SPEED_MIN_SECONDS)
            speed = distance_prev / (elapsed / 3600.0)
        if latitude is not None and self.home_latitude is not None:
            distance_home = haversine_km(
                self.home_latitude, self.home_longitude, latitude, longitude
            )
        learned = self.learned
        if learned >= 2:
            # Shrink the spread toward a floor so that two identical amounts do not
            # make every later amount look infinitely unusual.
            spread = max(self.log_amount_std, 0.35)
            zscore = (math.log(amount) - self.log_amount_mean) / spread
        else:
            zscore = 0.0
        seconds_since = self._seconds_since_previous(epoch, recent_times)
        seconds_since_located = (
            max(epoch - self.last_located_epoch, 0.0)
            if self.last_located_epoch is not None
            else seconds_since
        )
        return FeatureRow(
            epoch=epoch,
            amount=amount,
            typical_amount=self.typical_amount,
            history_count=learned,
            amount_zscore=zscore,
            distance_prev_km=distance_prev,
            speed_kmh=speed,
            seconds_since_prev=(
                seconds_since_located if distance_prev is not None else seconds_since
            ),
            previous_location=self.last_location,
            distance_home_km=distance_home,
            count_10m=count_10m,
            count_1h=count_1h,
            count_24h=count_24h,
            amount_24h=amount_24h,
            hour=hour,
            new_country=bool(
                country and self.countries and country not in self.countries
            ),
            new_merchant=bool(
                merchant_id and learned >= 5 and merchant_id not in self.merchants
            ),
            recent_times=recent_times,
            channel_novelty=(
                1.0 - self.channels.get(channel, 0) / learned
                if channel and learned >= 5
                else 0.0
            ),
            new_category=bool(
                merchant_category
                and learned >= 5
                and merchant_category not in self.categories
            ),
        )

    def apply(self, *, learn: bool = True, **transaction) -> None:
        """Fold one transaction into the state (in event order).

        Takes `_learn`'s keyword arguments (epoch, amount, place, merchant...).
        With `learn=False` (judged fraud) it only counts and joins the recent
        window; the profile is left as it was (see the class docstring).
        """
        epoch, amount = transaction["epoch"], transaction["amount"]
        self.count += 1
        if self.last_epoch is None or epoch >= self.last_epoch:
            self.last_epoch = epoch
        horizon = epoch - RECENT_WINDOW_SECONDS
        recent = [pair for pair in self.recent if pair[0] >= horizon]
        recent.append([epoch, amount])
        if len(recent) > 1 and recent[-2][0] > epoch:
            recent.sort(key=lambda pair: pair[0])
        self.recent = recent[-RECENT_MAX_EVENTS:]
        if learn:
            self._learn(**transaction)

    def learn_later(self, **transaction) -> None:
        """Teach the profile a transaction applied earlier without learning.

        For a verdict of fraud that an analyst found legitimate: it already
        counted, and sits in the recent window; now the amount statistics, known
        places, merchants, categories and channels take it in too (its place
        becomes the last one only if nothing later was located). Its `version`
        moves on (`learned` does), so that scorers holding the state before this
        reload it instead of overwriting it. Takes `apply`'s keyword arguments.
        """
        self._learn(**transaction)

    def _learn(
        self,
        *,
        epoch: float,
        amount: float,
        latitude: float | None,
        longitude: float | None,
        location: str,
        country: str,
        merchant_id: str,
        merchant_category: str = "",
        channel: str = "",
    ) -> None:
        """Fold a transaction into the profile: amounts, places, merchants, channels."""
        self.learned += 1
        value = math.log(amount)
        delta = value - self.log_amount_mean
        self.log_amount_mean += delta / self.learned
        self.log_amount_m2 += delta * (value - self.log_amount_mean)
        if latitude is not None:
            if not self.located_after(epoch):
                self.last_latitude, self.last_longitude = latitude, longitude
                self.last_located_epoch = epoch
                self.last_location = location
            if self.home_latitude is None:
                # Home is where the card is first seen; trips do not move it.
                self.home_latitude, self.home_longitude = latitude, longitude
                self.home_location = location
        if country and country not in self.countries:
            self.countries = [*self.countries, country][-KNOWN_COUNTRIES_MAX:]
        if merchant_id:
            if merchant_id in self.merchants:
                self.merchants.remove(merchant_id)
            self.merchants = [*self.merchants, merchant_id][-KNOWN_MERCHANTS_MAX:]
        if merchant_category and merchant_category not in self.categories:
            self.categories = [*self.categories, merchant_category][
                -KNOWN_CATEGORIES_MAX:
            ]
        if channel:
            self.channels[channel] = self.channels.get(channel, 0) + 1


class UserStateStore(Protocol):
    """Where per-user state lives between batches."""

    def states_get(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Return working copies of these users' states (new users get empty ones)."""

    def states_put(self, states: Iterable[UserState]) -> None:
        """Persist changed states (the ORM store: in the caller's transaction)."""


class InMemoryStateStore:
    """A state store in a dict: backtests and training replays, isolated from the DB."""

    def __init__(self) -> None:
        self.states: dict[str, UserState] = {}

    def states_get(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Return the live states themselves; nothing here can roll back."""
        result = {}
        for user_id in user_ids:
            state = self.states.get(user_id)
            if state is None:
                state = self.states[user_id] = UserState(user_id=user_id)
            result[user_id] = state
        return result

    def states_put(self, states: Iterable[UserState]) -> None:
        """Keep the states (already the live objects)."""
        for state in states:
            self.states[state.user_id] = state
