"""Day-by-day generation of cardholders' genuine activity, merged in event order."""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from detection.geo import haversine_km

from . import fraud
from .users import (
    CHANNELS,
    DAY,
    Trip,
    User,
    make_user,
    poisson,
    price_cents,
)
from .world import City, Merchant, World, cumulative

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
# Cities get about this many cardholders each, so that neighbours share shops
# (which is what makes a compromised terminal hit several people).
USERS_PER_CITY = 12
MAX_HOME_CITIES = 1500
BIG_PURCHASE_RATE = 0.004  # per cardholder per day: a TV, a sofa, a ring
BIG_PURCHASE_CATEGORIES = ("electronics", "home_goods", "jewelry", "clothing")


class Event(NamedTuple):
    """One transaction before it is numbered and serialised."""

    ts: int  # UTC epoch seconds
    seq: int  # creation order, to break timestamp ties reproducibly
    user: str
    cents: int
    merchant_id: str
    category: str
    channel: str
    city: City
    lat: float
    lon: float
    scenario: str | None


class Simulator:
    """Cardholders in a world of merchants, advanced one day at a time."""

    def __init__(
        self, *, users: int, seed: int, start: datetime, fraud_rate_scale: float
    ) -> None:
        """Draw the cardholders; everything follows from the seed."""
        if users < 1:
            raise ValueError("users must be at least 1")
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.rng = random.Random(seed)
        self.world = World(seed)
        self.start = int(start.timestamp())
        self.scale = max(0.0, float(fraud_rate_scale))
        self.compromised: dict[str, tuple[int, int]] = {}
        self._seq = itertools.count()
        count = min(MAX_HOME_CITIES, max(1, users // USERS_PER_CITY))
        homes = self.world.home_cities(self.rng, count)
        home_cum = cumulative(c.population**0.5 for c in homes)
        self.users = [
            make_user(
                self.world,
                self.rng,
                f"user-{seed}-{k:06d}",
                homes[bisect.bisect(home_cum, self.rng.random() * home_cum[-1])],
            )
            for k in range(users)
        ]

    def event(
        self,
        t: int,
        user: User,
        merchant: Merchant,
        channel: str,
        city: City,
        cents: int,
        scenario: str | None,
    ) -> Event:
        """Build an event; web purchases are placed where the shopper is."""
        if channel == "ecom":
            lat, lon = city.lat, city.lon
        else:
            lat, lon = merchant.lat, merchant.lon
        return Event(
            t,
            next(self._seq),
            user.uid,
            cents,
            merchant.merchant_id,
            merchant.category,
            channel,
            city,
            lat,
            lon,
            scenario,
        )

    def time_in_day(self, w: int, cum: list[float]) -> int:
        """Return a moment in [w, w + DAY) whose UTC hour follows the weights."""
        rng = self.rng
        hour = bisect.bisect(cum, rng.random() * cum[-1])
        return w + (hour * 3600 + rng.randrange(3600) - w) % DAY

    def spend(
        self,
        user: User,
        t: int,
        channel: str,
        merchant: Merchant,
        cents: int,
        out: list[Event],
    ) -> None:
        """Record a genuine purchase, unless the cardholder cannot make it then."""
        city = user.location(t)
        if city is None or user.blocked(t):
            return
        window = self.compromised.get(merchant.merchant_id)
        scenario = None
        if window is not None and window[0] <= t < window[1]:
            scenario = "compromised_merchant"
        out.append(self.event(t, user, merchant, channel, city, cents, scenario))
        user.used.add(merchant.merchant_id)
        user.categories.add(merchant.category)

    def purchase(self, user: User, t: int, out: list[Event], channel: str = "") -> None:
        """Make a habitual purchase: mostly favourite merchants, in usual amounts."""
        rng, world = self.rng, self.world
        city = user.location(t)
        if city is None:
            return
        at_home = city.idx == user.home.idx
        if not channel:
            cum = user.channel_cum
            channel = CHANNELS[bisect.bisect(cum, rng.random() * cum[-1])]
        explore = rng.random() < user.explore
        if channel == "ecom":
            if explore:
                merchant = world.web.pick(rng)
            else:
                merchant = user.pick(rng, user.webs, user.web_cum)
        elif channel == "atm":
            merchant = rng.choice(user.atms) if at_home else world.atms(city).pick(rng)
        elif at_home and not explore:
            merchant = user.pick(rng, user.shops, user.shop_cum)
        else:
            merchant = world.streets(city).pick(rng)
        cents = price_cents(rng, user, merchant.category)
        self.spend(user, t, channel, merchant, cents, out)

    def travel_seconds(self, km: float) -> int:
        """Return door-to-door travel time: by road if near, else by plane."""
        hours = km / 80 if km < 400 else km / 700
        return int((hours + self.rng.uniform(0.5, 2.5)) * 3600)

    def plan_trip(self, user: User, w: int, out: list[Event]) -> None:
        """Plan a trip days ahead, sometimes booking it online today."""
        rng, world, home = self.rng, self.world, user.home
        dest = world.domestic_city(rng, home) if rng.random() < 0.55 else None
        dest = dest or world.foreign_city(rng, home)
        km = haversine_km(home.lat, home.lon, dest.lat, dest.lon)
        # Two days ahead at least, so no event already made for today can clash.
        depart = w + DAY * rng.randint(2, 21) + rng.randint(6, 20) * 3600
        depart -= home.utc_offset
        arrive = depart + self.travel_seconds(km)
        leave = arrive + int(rng.uniform(1.5, 12.0) * DAY)
        user.trip = Trip(depart, arrive, leave, leave + self.travel_seconds(km), dest)
        if rng.random() < 0.6:
            t = self.time_in_day(w, user.utc_hours(home.utc_offset))
            ticket = world.web.pick_in(rng, ("travel",))
            cents = round(user.level * rng.uniform(3.0, 10.0) * 100)
            self.spend(user, t, "ecom", ticket, cents, out)

    def genuine_day(self, user: User, w: int) -> list[Event]:
        """Return the cardholder's genuine purchases starting in [w, w + DAY)."""
        rng = self.rng
        out: list[Event] = []
        if user.trip is not None and user.trip.back <= w:
            user.trip = None
        if user.trip is None and rng.random() < user.trip_rate:
            self.plan_trip(user, w, out)
        here = user.location(w + DAY // 2) or user.home
        cum = user.utc_hours(here.utc_offset)
        rate = user.rate * (1.25 if here.idx != user.home.idx else 1.0)
        if datetime.fromtimestamp(w + DAY // 2, UTC).weekday() >= 5:
            rate *= user.weekend
        for _ in range(poisson(rng, rate)):
            self.purchase(user, self.time_in_day(w, cum), out)
        if rng.random() < user.burst_rate:
            # A shopping spree: a few purchases minutes apart, legitimately.
            t = self.time_in_day(w, cum)
            for _ in range(rng.randint(2, 5)):
                self.purchase(user, t, out, "pos")
                t += rng.randint(60, 900)
        if rng.random() < BIG_PURCHASE_RATE:
            self.big_purchase(user, self.time_in_day(w, cum), out)
        return out

    def big_purchase(self, user: User, t: int, out: list[Event]) -> None:
        """Make a rare, genuine, expensive purchase (3-8 times the usual level)."""
        rng = self.rng
        city = user.location(t)
        if city is None:
            return
        if rng.random() < 0.6:
            channel = "pos"
            merchant = self.world.streets(city).pick_in(rng, BIG_PURCHASE_CATEGORIES)
        else:
            channel = "ecom"
            merchant = self.world.web.pick_in(rng, ("electronics", "online_retail"))
        cents = round(user.level * rng.uniform(3.0, 8.0) * 100)
        self.spend(user, t, channel, merchant, cents, out)

    def compromise_merchants(self, w: int) -> None:
        """Compromise a few terminals: every purchase there is fraud for 28 days."""
        rng = self.rng
        self.compromised = {
            mid: window for mid, window in self.compromised.items() if window[1] > w
        }
        lam = fraud.COMPROMISES_PER_USER_DAY * len(self.users) * self.scale
        for _ in range(poisson(rng, lam)):
            # A random cardholder's favourite: busy terminals are likelier targets.
            user = rng.choice(self.users)
            merchant = user.pick(rng, user.shops, user.shop_cum)
            begin = w + rng.randrange(DAY)
            self.compromised[merchant.merchant_id] = (
                begin,
                begin + fraud.COMPROMISE_DAYS * DAY,
            )

    def day(self, w: int) -> list[Event]:
        """Return every event generated for the day starting at w."""
        self.compromise_merchants(w)
        batch: list[Event] = []
        for user in self.users:
            genuine = self.genuine_day(user, w)
            fraud.inject(self, user, w, genuine, batch)
            batch.extend(genuine)
        return batch

    def events(self, end: int | None) -> Iterator[Event]:
        """Yield events in timestamp order until `end` (never, if None)."""
        pending: list[Event] = []
        w = self.start
        while end is None or w < end:
            # Events made for a day never precede it, so whatever is queued
            # before the day's end is final and can be released in order.
            for event in self.day(w):
                heapq.heappush(pending, event)
            limit = w + DAY if end is None else min(w + DAY, end)
            while pending and pending[0].ts < limit:
                yield heapq.heappop(pending)
            w += DAY


_DATES: dict[int, str] = {}


def iso_timestamp(ts: int) -> str:
    """Format epoch seconds as ISO 8601 UTC with a Z, caching the date part."""
    days, rest = divmod(ts, DAY)
    date = _DATES.get(days)
    if date is None:
        date = datetime.fromtimestamp(days * DAY, UTC).strftime("%Y-%m-%d")
        _DATES[days] = date
    hours, rest = divmod(rest, 3600)
    return f"{date}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def to_record(event: Event, transaction_id: str) -> dict:
    """Serialise an event to the transaction message schema."""
    cents = event.cents
    return {
        "transaction_id": transaction_id,
        "user_id": event.user,
        "amount": f"{cents // 100}.{cents % 100:02d}",
        "currency": "USD",
        "timestamp": iso_timestamp(event.ts),
        "merchant_id": event.merchant_id,
        "merchant_category": event.category,
        "channel": event.channel,
        "location": event.city.name,
        "latitude": event.lat,
        "longitude": event.lon,
        "country": event.city.country,
        "is_fraud": event.scenario is not None,
        "fraud_scenario": event.scenario,
    }


def simulate_transactions(
    *,
    users: int,
    days: float,
    seed: int,
    start: datetime | None = None,
    fraud_rate_scale: float = 1.0,
) -> Iterator[dict]:
    """Yield `days` of transactions by `users` cardholders in timestamp order.

    The output is a pure function of the arguments; `start` defaults to
    2026-01-01T00:00:00Z so that runs are reproducible.
    """
    sim = Simulator(
        users=users,
        seed=seed,
        start=start or DEFAULT_START,
        fraud_rate_scale=fraud_rate_scale,
    )
    end = sim.start + round(days * DAY)
    for n, event in enumerate(sim.events(end)):
        yield to_record(event, f"tx-{seed}-{n:09d}")


def simulate_stream(
    *, users: int, seed: int, start: datetime | None = None
) -> Iterator[dict]:
    """Yield transactions forever, from `start` (default: now, UTC) onwards.

    Cardholders keep their homes and habits from one day to the next. The start
    time is part of the transaction ids so that restarted streams do not clash.
    """
    sim = Simulator(
        users=users,
        seed=seed,
        start=start or datetime.now(UTC),
        fraud_rate_scale=1.0,
    )
    # The same cards as `simulate` with this seed (make run loads their history
    # that way), but their own days: drawn from the seed alone, the stream's
    # first week would replay that history day for day, a week later.
    sim.rng = random.Random(f"stream-{seed}-{sim.start}")
    prefix = f"st-{seed}-{sim.start}-"
    for n, event in enumerate(sim.events(None)):
        yield to_record(event, f"{prefix}{n:010d}")
