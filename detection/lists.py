"""Block and allow lists (ListEntry) as the scoring core applies them.

Scorers re-read their config every DETECTION_CONFIG_REFRESH_SECONDS; the lists
are read again only when they changed (ListsVersion, a counter every save and
delete of an entry moves), so a list of many cards costs one one-row query per
refresh, not a reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from detection.caching import SignatureCache

LIST_BLOCK_CODE = "blocklist"
LIST_BLOCK_LABEL = "Block list"
LIST_ALLOW_CODE = "allowlist"
LIST_ALLOW_LABEL = "Allow list"

# The message field each kind of entry matches.
KIND_FIELDS = (("card", "user_id"), ("merchant", "merchant_id"), ("country", "country"))


@dataclass(frozen=True)
class ListHit:
    """An entry that matched a transaction."""

    kind: str
    value: str
    action: str
    note: str


@dataclass(frozen=True)
class Lists:
    """The entries in force, by (kind, value): (action, note, expires epoch)."""

    entries: dict[tuple[str, str], tuple[str, str, float | None]]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def hits(
        self, message, now_epoch: float, *, country: str | None = None
    ) -> list[ListHit]:
        """Return the entries matching this message, blocks first.

        `country` is the one the scorer resolved (from the message, or from its
        location when the message has none): a Lagos payment without a country
        field still meets a block on NG.
        """
        found = []
        for kind, field in KIND_FIELDS:
            if kind == "country":
                value = (country or message.country or "").upper()
            else:
                value = getattr(message, field, "") or ""
            if not value:
                continue
            entry = self.entries.get((kind, value))
            if entry is None:
                continue
            action, note, expires = entry
            if expires is not None and expires <= now_epoch:
                continue
            found.append(ListHit(kind, value, action, note))
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
