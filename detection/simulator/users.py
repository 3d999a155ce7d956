"""Cardholders: where they live and how they habitually use their card."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import NamedTuple

from .world import CATEGORY_PRICE, City, Merchant, World, cumulative

DAY = 86_400
CHANNELS = ("pos", "ecom", "atm")


class Trip(NamedTuple):
    """A journey away from home, as UTC epoch seconds."""

    depart: int  # last moment at home
    arrive: int  # first moment at the destination
    leave: int  # last moment at the destination
    back: int  # first moment at home again
    city: City


@dataclass(slots=True, eq=False)
class User:
    """A cardholder's habits and the state that carries over from day to day."""

    uid: str
    home: City
    level: float  # typical purchase, in dollars
    spread: float  # lognormal sigma of purchase amounts
    rate: float  # purchases per day
    weekend: float  # activity multiplier on Saturdays and Sundays
    hours: list[float]  # activity weight of each local hour
    channel_cum: list[float]
    shops: list[Merchant]
    shop_cum: list[float]
    webs: list[Merchant]
    web_cum: list[float]
    atms: list[Merchant]
    explore: float  # share of purchases made outside the favourites
    trip_rate: float  # trips started per day
    burst_rate: float  # shopping sprees per day
    used: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    trip: Trip | None = None
    blocked_from: int = 0
    blocked_until: int = 0
    leak: tuple[int, int, City] | None = None  # (begin, end, fraudster's city)
    hour_cache: dict[int, list[float]] = field(default_factory=dict)

    def location(self, t: int) -> City | None:
        """Return where the cardholder is at time t, or None while travelling."""
        trip = self.trip
        if trip is None or t < trip.depart or t >= trip.back:
            return self.home
        if trip.arrive <= t < trip.leave:
            return trip.city
        return None

    def stays(self, t0: int, t1: int) -> bool:
        """Return whether the cardholder stays in one city from t0 to t1."""
        trip = self.trip
        if trip is None:
            return True
        marks = (trip.depart, trip.arrive, trip.leave, trip.back)
        return self.location(t0) is not None and not any(t0 < m <= t1 for m in marks)

    def blocked(self, t: int) -> bool:
        """Return whether the card is blocked (after a theft) at time t."""
        return self.blocked_from <= t < self.blocked_until

    def utc_hours(self, offset: int) -> list[float]:
        """Return cumulative activity weights per UTC hour in a time zone."""
        cum = self.hour_cache.get(offset)
        if cum is None:
            shift = round(offset / 3600)
            cum = cumulative(self.hours[(h + shift) % 24] for h in range(24))
            self.hour_cache[offset] = cum
        return cum

    def pick(self, rng: random.Random, items: list, cum: list[float]):
        """Return one of the cardholder's favourites, the top ones more often."""
        return items[bisect.bisect(cum, rng.random() * cum[-1])]


def _hour_profile(rng: random.Random) -> list[float]:
    """Return activity weights for the 24 local hours: asleep at night mostly."""
    if rng.random() < 0.06:
        # Shift workers and night owls shop late.
        peaks = [rng.uniform(21.0, 27.0)]
    else:
        peaks = [rng.uniform(8.0, 14.0), rng.uniform(16.0, 21.5)]
    weights = [rng.uniform(0.002, 0.02)] * 24
    for peak in peaks:
        width, height = rng.uniform(1.5, 3.5), rng.uniform(0.5, 1.0)
        for hour in range(24):
            gap = abs(hour + 0.5 - peak) % 24
            gap = min(gap, 24 - gap)
            weights[hour] += height * math.exp(-(gap**2) / (2 * width**2))
    return weights


def _favourites(rng: random.Random, pick, count: int) -> tuple[list, list[float]]:
    """Return distinct merchants drawn with `pick` and a Zipf-like preference."""
    chosen: dict[str, Merchant] = {}
    for _ in range(count * 4):
        merchant = pick(rng)
        chosen.setdefault(merchant.merchant_id, merchant)
        if len(chosen) == count:
            break
    items = list(chosen.values())
    return items, cumulative(1.0 / (rank + 1) for rank in range(len(items)))


def make_user(world: World, rng: random.Random, uid: str, home: City) -> User:
    """Draw a cardholder's habits; spending levels vary widely across people."""
    atm_share = 0.0 if rng.random() < 0.3 else rng.uniform(0.01, 0.08)
    ecom_share = rng.uniform(0.03, 0.45)
    channel_cum = cumulative((1.0 - atm_share - ecom_share, ecom_share, atm_share))
    shops, shop_cum = _favourites(rng, world.streets(home).pick, rng.randint(4, 18))
    webs, web_cum = _favourites(rng, world.web.pick, rng.randint(1, 6))
    atms, _ = _favourites(rng, world.atms(home).pick, rng.randint(1, 2))
    return User(
        uid=uid,
        home=home,
        # Median $40, but from under $10 to several hundred across people.
        level=min(800.0, max(4.0, rng.lognormvariate(math.log(40.0), 0.95))),
        spread=rng.uniform(0.35, 0.8),
        rate=math.exp(rng.uniform(math.log(0.5), math.log(8.0))),
        weekend=rng.uniform(0.6, 1.5),
        hours=_hour_profile(rng),
        channel_cum=channel_cum,
        shops=shops,
        shop_cum=shop_cum,
        webs=webs,
        web_cum=web_cum,
        atms=atms,
        explore=rng.uniform(0.05, 0.2),
        trip_rate=math.exp(rng.uniform(math.log(0.002), math.log(0.03))),
        burst_rate=rng.uniform(0.01, 0.06),
    )


def price_cents(rng: random.Random, user: User, category: str) -> int:
    """Return a habitual price in cents for a purchase in a category."""
    factor = CATEGORY_PRICE.get(category, 1.0) * rng.lognormvariate(0.0, user.spread)
    if category == "atm_withdrawal":
        return atm_cents(user.level * factor)
    return max(50, round(user.level * factor * 100))


def atm_cents(dollars: float) -> int:
    """Return a cash withdrawal in cents: a multiple of $20 from $20 to $1,000."""
    # Banks cap a withdrawal at around $1,000.
    return min(50, max(1, round(dollars / 20))) * 2000


def poisson(rng: random.Random, lam: float) -> int:
    """Draw a Poisson count (Knuth's method; a normal approximation when large)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, count, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def loguniform(rng: random.Random, low: float, high: float) -> float:
    """Draw a value whose logarithm is uniform between log(low) and log(high)."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))
