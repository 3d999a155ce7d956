"""Block and allow lists (ListEntry) as the scoring core applies them.

Scorers re-read their config every DETECTION_CONFIG_REFRESH_SECONDS; the lists
are read again only when they changed (ListsVersion, a counter every save and
delete of an entry moves), so a list of many cards costs one one-row query per
refresh, not a reload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from detection.caching import SignatureCache
from detection.geo import NearestCity, nearest_cities

LIST_BLOCK_CODE = "blocklist"
LIST_BLOCK_LABEL = "Block list"
LIST_ALLOW_CODE = "allowlist"
LIST_ALLOW_LABEL = "Allow list"

# The message field each kind of entry matches.
KIND_FIELDS = (("card", "user_id"), ("merchant", "merchant_id"), ("country", "country"))


class Place(Protocol):
    """Where the scorer placed a payment (`scoring.features.Prepared`)."""

    country: str
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True)
class ListHit:
    """An entry that matched a transaction."""

    kind: str
    value: str
    action: str
    note: str
    # How the value was found when the message did not carry it ("from the
    # coordinates: nearest city Lagos, 1 km").
    found_by: str = ""

    @property
    def shown(self) -> str:
        """Return the value as a reason says it: "NG (from the coordinates:
        nearest city Lagos, 1 km)", or "m-1"."""
        return f"{self.value} ({self.found_by})" if self.found_by else self.value


@dataclass(frozen=True)
class Lists:
    """The entries in force, by (kind, value): (action, note, expires epoch)."""

    entries: dict[tuple[str, str], tuple[str, str, float | None]]
    # Whether any entry is a country's: only then do coordinates without a
    # country cost a nearest-city lookup.
    has_countries: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        countries = any(kind == "country" for kind, _value in self.entries)
        object.__setattr__(self, "has_countries", countries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def nearest_cities(self, places: Sequence[Place]) -> list[NearestCity | None]:
        """Return, aligned with `places` (a batch's places as the scorer
        resolved them: `Prepared` rows), the nearest city of each one with
        coordinates and no country, while a country entry is in force; None
        for the others.

        A country entry must not depend on how the place was given: a payment
        with Lagos's coordinates and no country meets a block on NG as one
        "in Lagos" does. Its country is then the nearest city's within
        `geo.NEAREST_CITY_MAX_KM` (`geo.nearest_cities`: the decisions and
        their accuracy). It is looked up here, for the batch at once and only
        then, not in the features: a payment that carries its country (the
        simulator's do), or any payment while no country is listed, pays
        nothing for it, and the features (a card's known countries,
        `new_country`) are as before.
        """
        found: list[NearestCity | None] = [None] * len(places)
        if not self.has_countries:
            return found
        wanted = [
            index
            for index, place in enumerate(places)
            if not place.country and place.latitude is not None
        ]
        points = [(places[i].latitude, places[i].longitude) for i in wanted]
        for index, near in zip(wanted, nearest_cities(points), strict=True):
            found[index] = near
        return found

    def hits(
        self,
        message,
        now_epoch: float,
        *,
        country: str | None = None,
        nearest: NearestCity | None = None,
    ) -> list[ListHit]:
        """Return the entries matching this message, blocks first.

        The country matched is the message's `country` field (it wins over
        any place); else `country`, the one the scorer resolved from the
        location's city name (a Lagos payment without a country field still
        meets a block on NG); else that of `nearest`, the city nearest to its
        coordinates (`nearest_cities`), and the hit says so.
        """
        found = []
        for kind, attribute in KIND_FIELDS:
            found_by = ""
            if kind == "country":
                value = (message.country or country or "").upper()
                if not value and nearest is not None:
                    value = nearest.country
                    found_by = (
                        f"from the coordinates: nearest city {nearest.name}, "
                        f"{nearest.distance_km:.0f} km"
                    )
            else:
                value = getattr(message, attribute, "") or ""
            if not value:
                continue
            entry = self.entries.get((kind, value))
            if entry is None:
                continue
            action, note, expires = entry
            if expires is not None and expires <= now_epoch:
                continue
            found.append(ListHit(kind, value, action, note, found_by))
        found.sort(key=lambda hit: hit.action != "block")
        return found


EMPTY = Lists({})

_cache: SignatureCache[Lists] = SignatureCache()


def lists_current() -> Lists:
    """Return the lists from the database, reloaded only when they changed."""
    from detection.models import ListEntry, ListsVersion

    def load() -> Lists:
        entries = {
            (kind, value): (action, note, _epoch(expires))
            for kind, value, action, note, expires in ListEntry.objects.values_list(
                "kind", "value", "action", "note", "expires_at"
            )
        }
        return Lists(entries) if entries else EMPTY

    version = ListsVersion.objects.filter(pk=1).values_list("version").first()
    return _cache.get(version, load)


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def lists_cache_clear() -> None:
    """Forget the loaded lists (tests: a rolled-back database reuses versions)."""
    _cache.clear()
