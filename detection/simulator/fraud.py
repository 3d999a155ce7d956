"""Fraud scenarios, injected into a cardholder's day next to the genuine purchases.

The scenarios follow common card-fraud patterns (after the Fraud Detection
Handbook's simulator, Le Borgne et al., extended). Amounts are set relative to
the victim's own habits, so that fraud on a frugal card still looks like an
ordinary purchase to anyone who does not know the cardholder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .users import DAY, User, atm_cents, loguniform, poisson
from .world import Merchant, Pool

if TYPE_CHECKING:
    from .engine import Event, Simulator

# Incidents per cardholder per day at fraud_rate_scale=1; together with the
# compromised terminals this makes roughly 1-3 % of transactions fraudulent.
RATES = {
    "leaked_card": 0.0007,
    "stolen_card": 0.0011,
    "cloned_card": 0.0018,
    "card_testing": 0.001,
    "huge_amount": 0.0012,
    "account_takeover": 0.0011,
}
COMPROMISES_PER_USER_DAY = 0.0006
COMPROMISE_DAYS = 28
LEAK_DAYS = 14
SCENARIOS = ("compromised_merchant", *RATES)

# What fraudsters buy: goods that resell well, or value that moves easily.
_RESALE_WEB = ("electronics", "online_retail", "gift_cards", "clothing", "travel")
_RESALE_STREET = ("electronics", "clothing", "jewelry")
_PROBE_WEB = ("digital_goods", "subscription", "gaming", "online_retail")
_TAKEOVER_WEB = ("gift_cards", "money_transfer", "digital_goods", "electronics")
_CLONE_STREET = ("electronics", "clothing", "jewelry", "grocery", "fuel")


def _unfamiliar(pool: Pool, sim: Simulator, user: User, categories) -> Merchant:
    """Return a merchant of the categories that the cardholder has never used."""
    merchant = pool.pick_in(sim.rng, categories)
    for _ in range(10):
        if merchant.merchant_id not in user.used:
            break
        merchant = pool.pick_in(sim.rng, categories)
    return merchant


def _resale_cents(sim: Simulator, user: User, low: float, high: float) -> int:
    """Return a fraudulent amount, low to high times the cardholder's level."""
    rng = sim.rng
    return round(
        user.level * rng.uniform(low, high) * rng.lognormvariate(0, 0.25) * 100
    )


def leaked_card(sim: Simulator, user: User, w: int, out: list[Event]) -> None:
    """Use leaked card details for two weeks: a third of the card's purchases."""
    rng, world = sim.rng, sim.world
    if user.leak is not None and user.leak[1] <= w:
        user.leak = None
    if user.leak is None and rng.random() < RATES["leaked_card"] * sim.scale:
        # Fraudsters shop near the victim (proxies), elsewhere in the country,
        # or abroad: location alone must not give them away.
        draw = rng.random()
        if draw < 0.35:
            city = user.home
        elif draw < 0.6:
            city = world.domestic_city(rng, user.home) or user.home
        else:
            city = world.foreign_city(rng, user.home)
        begin = w + rng.randrange(DAY)
        user.leak = (begin, begin + LEAK_DAYS * DAY, city)
    if user.leak is None:
        return
    begin, end, city = user.leak
    # Half as many fraudulent purchases as genuine ones: a third of the total.
    for _ in range(poisson(rng, 0.5 * user.rate)):
        t = w + rng.randrange(DAY)
        if not begin <= t < end:
            continue
        if rng.random() < 0.85:
            channel = "ecom"
            merchant = _unfamiliar(world.web, sim, user, _RESALE_WEB)
        else:
            channel = "pos"
            merchant = _unfamiliar(world.streets(city), sim, user, _RESALE_STREET)
        cents = _resale_cents(sim, user, 3.0, 8.0)
        out.append(sim.event(t, user, merchant, channel, city, cents, "leaked_card"))


def stolen_card(sim: Simulator, user: User, genuine: list[Event], out: list) -> None:
    """Steal a card after a purchase and spend fast nearby until it is blocked."""
    rng, world = sim.rng, sim.world
    present = [e for e in genuine if e.channel != "ecom"]
    if not present or rng.random() >= RATES["stolen_card"] * sim.scale:
        return
    anchor = rng.choice(present)
    t = anchor.ts + rng.randint(600, 7200)
    if not user.stays(anchor.ts, anchor.ts + 6 * 3600):
        return
    city = anchor.city
    for _ in range(rng.randint(2, 6)):
        if rng.random() < 0.25:
            merchant = _unfamiliar(world.atms(city), sim, user, ("atm_withdrawal",))
            channel, cents = "atm", atm_cents(user.level * rng.uniform(2.0, 5.0))
        else:
            merchant = _unfamiliar(world.streets(city), sim, user, _RESALE_STREET)
            channel, cents = "pos", _resale_cents(sim, user, 1.0, 4.0)
        out.append(sim.event(t, user, merchant, channel, city, cents, "stolen_card"))
        t += rng.randint(300, 1800)
    # The cardholder has lost the card: no genuine use until a new one arrives.
    user.blocked_from = anchor.ts + 1
    user.blocked_until = t + rng.randint(12 * 3600, 72 * 3600)
    genuine[:] = [e for e in genuine if not user.blocked(e.ts)]


def cloned_card(sim: Simulator, user: User, genuine: list[Event], out: list) -> None:
    """Use a cloned card in a far city, hours after a genuine purchase at home."""
    rng, world = sim.rng, sim.world
    present = [e for e in genuine if e.channel != "ecom"]
    if not present or rng.random() >= RATES["cloned_card"] * sim.scale:
        return
    anchor = rng.choice(present)
    if not user.stays(anchor.ts, anchor.ts + 6 * 3600):
        return
    # Far enough (beyond terminal jitter) that nobody could have travelled there.
    city = world.far_city(rng, anchor.city.lat, anchor.city.lon, 1600.0)
    t = anchor.ts + rng.randint(1800, 3 * 3600)
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.35:
            merchant = world.atms(city).pick(rng)
            channel, cents = "atm", atm_cents(loguniform(rng, 100.0, 800.0))
        else:
            merchant = world.streets(city).pick_in(rng, _CLONE_STREET)
            channel, cents = "pos", _resale_cents(sim, user, 1.5, 5.0)
        out.append(sim.event(t, user, merchant, channel, city, cents, "cloned_card"))
        t += rng.randint(300, 2700)


def card_testing(sim: Simulator, user: User, w: int, out: list[Event]) -> None:
    """Probe the card with tiny web charges, then cash in with large ones."""
    rng, world = sim.rng, sim.world
    if rng.random() >= RATES["card_testing"] * sim.scale:
        return
    t = w + rng.randrange(DAY)
    city = user.location(t) or user.home
    if rng.random() < 0.7:
        city = world.random_city(rng)
    probe = _unfamiliar(world.web, sim, user, _PROBE_WEB)
    for _ in range(rng.randint(3, 10)):
        cents = rng.randint(50, 500)
        out.append(sim.event(t, user, probe, "ecom", city, cents, "card_testing"))
        t += rng.randint(5, 60)
    t += rng.randint(300, 7200)
    for _ in range(rng.randint(1, 3)):
        merchant = _unfamiliar(world.web, sim, user, _RESALE_WEB)
        cents = _resale_cents(sim, user, 3.0, 10.0)
        out.append(sim.event(t, user, merchant, "ecom", city, cents, "card_testing"))
        t += rng.randint(60, 1200)


def huge_amount(sim: Simulator, user: User, w: int, out: list[Event]) -> None:
    """Make one very large purchase out of the blue where the cardholder is."""
    rng, world = sim.rng, sim.world
    if rng.random() >= RATES["huge_amount"] * sim.scale:
        return
    t = w + rng.randrange(DAY)
    city = user.location(t)
    if city is None:
        return
    dollars = max(user.level * loguniform(rng, 20, 100), loguniform(rng, 800, 6000))
    cents = round(min(dollars, 60_000.0) * 100)
    if rng.random() < 0.5:
        channel = "pos"
        merchant = _unfamiliar(world.streets(city), sim, user, _RESALE_STREET)
    else:
        channel = "ecom"
        merchant = _unfamiliar(world.web, sim, user, ("electronics", "travel"))
    out.append(sim.event(t, user, merchant, channel, city, cents, "huge_amount"))


def account_takeover(sim: Simulator, user: User, w: int, out: list[Event]) -> None:
    """Take over the account from abroad at the victim's night; drain it fast."""
    rng, world = sim.rng, sim.world
    if rng.random() >= RATES["account_takeover"] * sim.scale:
        return
    city = world.foreign_city(rng, user.home)
    # Between midnight and 5 a.m. for the victim, daytime for the fraudster.
    night = rng.randrange(5 * 3600) - user.home.utc_offset
    t = w + (night - w) % DAY
    fresh = [c for c in _TAKEOVER_WEB if c not in user.categories]
    for _ in range(rng.randint(3, 8)):
        merchant = _unfamiliar(world.web, sim, user, fresh or _TAKEOVER_WEB)
        cents = _resale_cents(sim, user, 1.0, 4.0)
        out.append(
            sim.event(t, user, merchant, "ecom", city, cents, "account_takeover")
        )
        t += rng.randint(120, 1800)


def inject(sim: Simulator, user: User, w: int, genuine: list[Event], out: list) -> None:
    """Add the day's fraud for a cardholder to `out`; a theft also cuts `genuine`."""
    leaked_card(sim, user, w, out)
    # The theft runs first: it removes later genuine purchases, and the clone
    # must follow a genuine purchase that really happened.
    stolen_card(sim, user, genuine, out)
    cloned_card(sim, user, genuine, out)
    card_testing(sim, user, w, out)
    huge_amount(sim, user, w, out)
    account_takeover(sim, user, w, out)
