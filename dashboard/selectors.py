"""Reads behind the dashboard pages: overview figures, transaction detail context.

Everything here is sized for millions of stored transactions: totals and the
per-minute chart come from the maintained `VerdictTally` rows, and per-transaction
reads use the unique and (user_id, timestamp) indexes. No full-table COUNT(*).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q, Sum

from detection.geo import city_coordinates, haversine_km
from detection.lists import (
    LIST_ALLOW_CODE,
    LIST_ALLOW_LABEL,
    LIST_BLOCK_CODE,
    LIST_BLOCK_LABEL,
)
from detection.models import DeadLetter, ListEntry, UserProfile
from detection.profiles import profile_to_state
from detection.rules import RULE_TYPES
from detection.state import SPEED_MIN_SECONDS
from transactions.models import Label, ReasonTally, Transaction
from transactions.selectors import (
    user_transactions_recent,
    verdict_totals,
    verdicts_per_minute,
)

CHART_MINUTES = 60


def overview_summary(*, now: datetime | None = None) -> dict:
    """Return the overview's totals and the per-minute series of the last hour.

    The series has one entry per minute, oldest first, with zeros for minutes in
    which nothing was scored, so the chart's x axis is always the last hour.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    current_minute = now.replace(second=0, microsecond=0)
    first_minute = current_minute - timedelta(minutes=CHART_MINUTES - 1)
    found = {
        row["minute"].astimezone(UTC): row
        for row in verdicts_per_minute(since=first_minute)
    }
    series = []
    for offset in range(CHART_MINUTES):
        minute = first_minute + timedelta(minutes=offset)
        row = found.get(minute)
        total = row["total"] if row else 0
        flagged = row["suspicious"] + row["fraud"] if row else 0
        series.append(
            {"minute": minute.isoformat(), "total": total, "flagged": flagged}
        )
    return {"totals": verdict_totals(), "per_minute": series, "now": now.isoformat()}


def dead_letters_unresolved_count() -> int:
    """Return how many records the stream could not score and no redrive has
    resolved yet (the overview points operators at them)."""
    return DeadLetter.objects.filter(resolved_at__isnull=True).count()


RULE_WINDOWS = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def rule_performance(*, window: str, now: datetime | None = None) -> dict:
    """Return, per reason code, how often it fired in the window (by scoring
    time), how often in a flagged verdict, and what analysts and chargebacks said
    of those flagged verdicts: confirmed fraud, marked legit, and the confirmed
    precision (confirmed fraud among all of them). For the allow list, which
    makes verdicts legit, the same of the verdicts it allowed.

    Counts come from the per-minute ReasonTally; labels from the labelled
    transactions of the window only (few), never a scan of the ledger. Also the
    confirmed fraud that no reason caught (verdict legit, labelled fraud).
    """
    now = now or datetime.now(UTC)
    since = now - RULE_WINDOWS[window]
    counts = {
        row["code"]: row
        for row in ReasonTally.objects.filter(
            minute__gte=since.replace(second=0, microsecond=0)
        )
        .values("code")
        .annotate(fired=Sum("fired"), flagged=Sum("flagged"))
    }
    # From the labels (few) to their transactions, newest label first: the
    # first one seen of a transaction is its latest.
    labels = (
        Label.objects.filter(transaction__scored_at__gte=since)
        .latest_first()
        .values_list(
            "transaction_id",
            "transaction__reason_codes",
            "transaction__status",
            "is_fraud",
        )
    )
    fraud: Counter = Counter()
    legit: Counter = Counter()
    missed = 0
    seen: set[int] = set()
    for pk, codes, status, is_fraud in labels:
        if pk in seen:
            continue
        seen.add(pk)
        if status == Transaction.Status.LEGIT:
            missed += bool(is_fraud)
            # A legit verdict's rules did not flag it, so its label says nothing
            # of their precision; but the allow list decided it.
            credited = [LIST_ALLOW_CODE] if LIST_ALLOW_CODE in codes.split() else []
        else:
            credited = codes.split()
        for code in credited:
            (fraud if is_fraud else legit)[code] += 1
    rows = []
    for code, name in rule_choices():
        fired = counts.get(code, {}).get("fired") or 0
        flagged = counts.get(code, {}).get("flagged") or 0
        # Over every verdict it flagged (the allow list: allowed), labelled or
        # not: chargebacks only ever say "fraud", so precision among labelled
        # verdicts reads near 100%. This is a lower bound until every
        # chargeback is in (they take weeks).
        decided = fired if code == LIST_ALLOW_CODE else flagged
        rows.append(
            {
                "code": code,
                "name": name,
                "fired": fired,
                "flagged": flagged,
                "confirmed_fraud": fraud[code],
                "marked_legit": legit[code],
                "precision": min(fraud[code] / decided, 1.0) if decided else None,
            }
        )
    # The transactions page's own filter values for "scored in this window"
    # (its time inputs are UTC without a zone), so every link keeps the window.
    scored = f"time=scored&since={since:%Y-%m-%dT%H:%M:%S}"
    return {
        "window": window,
        "since": since,
        "rules": rows,
        "missed": missed,
        "scored_query": scored,
    }


def rule_choices() -> list[tuple[str, str]]:
    """Return (code, readable name) of every reason a verdict can give."""
    return [(code, rule.name) for code, rule in RULE_TYPES.items()] + [
        (LIST_BLOCK_CODE, LIST_BLOCK_LABEL),
        (LIST_ALLOW_CODE, LIST_ALLOW_LABEL),
    ]


def _rule_name(code: str) -> str:
    if code == LIST_BLOCK_CODE:
        return LIST_BLOCK_LABEL
    if code == LIST_ALLOW_CODE:
        return LIST_ALLOW_LABEL
    return RULE_TYPES[code].name if code in RULE_TYPES else code


@dataclass(frozen=True)
class TravelSummary:
    """Where the user paid before this transaction and how fast they must have moved."""

    previous: Transaction | None
    previous_location: str
    distance_km: float | None
    hours: float | None
    speed_kmh: float | None

    @property
    def since_text(self) -> str:
        """Return the time since the previous payment in words (4 min, 2.5 h)."""
        if self.hours is None:
            return "unknown"
        minutes = self.hours * 60
        if minutes < 90:
            return f"{minutes:.0f} min"
        if self.hours < 48:
            return f"{self.hours:.1f} h"
        return f"{self.hours / 24:.1f} days"


@dataclass(frozen=True)
class PlaceSummary:
    """Where the scoring core placed a payment, and from what."""

    latitude: float | None
    longitude: float | None
    country: str
    source: str

    @property
    def known(self) -> bool:
        return self.latitude is not None


def place_summary(*, transaction: Transaction) -> PlaceSummary:
    """Return the coordinates the travel checks used for a transaction and how
    they were found, as the scoring core finds them (`detection.geo`): given in
    the message, the city in the message's country, or, with no country, the most
    populous city of that name, which an analyst should know ("London" is
    London, GB, not London, Ontario, unless the message says CA)."""
    if transaction.latitude is not None and transaction.longitude is not None:
        return PlaceSummary(
            transaction.latitude, transaction.longitude, transaction.country,
            "coordinates given in the message",
        )  # fmt: skip
    if not transaction.location:
        return PlaceSummary(None, None, "", "no place given: travel not checked")
    found = city_coordinates(transaction.location, transaction.country)
    if found is None:
        where = f" in {transaction.country}" if transaction.country else ""
        return PlaceSummary(
            None, None, "", f"no city of that name{where}: travel not checked"
        )
    latitude, longitude, country = found
    suffix = transaction.location.rpartition(",")[2].strip().upper()
    if transaction.country or ("," in transaction.location and suffix == country):
        source = "the city of that name in that country"
    else:
        source = (
            "no country given: the most populous city of that name "
            "(a message's country picks another)"
        )
    return PlaceSummary(latitude, longitude, country, source)


def _coordinates(txn: Transaction) -> tuple[float, float] | None:
    if txn.latitude is not None and txn.longitude is not None:
        return txn.latitude, txn.longitude
    found = city_coordinates(txn.location, txn.country)
    return (found[0], found[1]) if found else None


def travel_summary(*, transaction: Transaction) -> TravelSummary:
    """Return where the card last paid, as its profile knows it, and the implied
    travel from there to this transaction.

    That is the previous located transaction the card's profile learned (not one
    judged fraud, nor one without a place), which is what the geo_velocity rule
    compares with: after a fraudster's charge in Lagos, the cardholder's next
    purchase at home is measured from home, as the rule measured it.
    """
    previous = (
        Transaction.objects.for_user(transaction.user_id)
        .filter(timestamp__lte=transaction.timestamp, profile_learned=True)
        .filter(Q(latitude__isnull=False) | ~Q(location=""))
        .exclude(pk=transaction.pk)
        .order_by("-timestamp", "-id")
        .first()
    )
    if previous is None:
        return TravelSummary(None, "", None, None, None)
    here, there = _coordinates(transaction), _coordinates(previous)
    seconds = (transaction.timestamp - previous.timestamp).total_seconds()
    distance = speed = None
    if here and there:
        distance = haversine_km(there[0], there[1], here[0], here[1])
        # The same floor as the geo_velocity rule, so the figures agree with it.
        speed = distance / (max(seconds, SPEED_MIN_SECONDS) / 3600.0)
    return TravelSummary(
        previous=previous,
        previous_location=previous.location,
        distance_km=None if distance is None else round(distance, 1),
        hours=round(seconds / 3600.0, 2),
        speed_kmh=None if speed is None else round(speed, 1),
    )


def user_profile_summary(*, user_id: str) -> dict | None:
    """Return the readable parts of a user's stored profile, or None if unknown."""
    profile = UserProfile.objects.filter(user_id=user_id).first()
    if profile is None:
        return None
    state = profile_to_state(profile)
    return {
        "transaction_count": state.count,
        "typical_amount": round(state.typical_amount, 2),
        "home_location": state.home_location,
        "last_location": state.last_location,
        "last_transaction_at": (
            datetime.fromtimestamp(state.last_epoch, tz=UTC)
            if state.last_epoch
            else None
        ),
        "countries": state.countries,
        "updated_at": profile.updated_at,
    }


def list_entries_matching(*, transaction: Transaction) -> list[ListEntry]:
    """Return the block/allow list entries for this card, merchant or country."""
    wanted = Q(kind="card", value=transaction.user_id)
    if transaction.merchant_id:
        wanted |= Q(kind="merchant", value=transaction.merchant_id)
    if transaction.country:
        wanted |= Q(kind="country", value=transaction.country.upper())
    entries = list(ListEntry.objects.filter(wanted).select_related("created_by"))
    now = datetime.now(UTC)
    for entry in entries:
        entry.expired = entry.expires_at is not None and entry.expires_at <= now
    return entries


def transaction_detail_context(*, transaction: Transaction) -> dict:
    """Return what the detail page shows beside the transaction itself."""
    labels = list(
        Label.objects.filter(transaction=transaction)
        .latest_first()
        .select_related("created_by")[:20]
    )
    return {
        "labels": labels,
        "label": labels[0] if labels else None,
        "list_entries": list_entries_matching(transaction=transaction),
        "list_targets": [
            (kind, value)
            for kind, value in (
                ("card", transaction.user_id),
                ("merchant", transaction.merchant_id),
                ("country", transaction.country),
            )
            if value
        ],
        "travel": travel_summary(transaction=transaction),
        "place": place_summary(transaction=transaction),
        "profile": user_profile_summary(user_id=transaction.user_id),
        "recent": [
            (
                item,
                [_rule_name(c) for c in item.reason_codes.split()],
            )
            for item in user_transactions_recent(user_id=transaction.user_id, limit=10)
        ],
    }


def session_signed_in(
    *, session_key: str | None, user_id, permission: str | None = None
) -> bool:
    """Return whether this session still signs in this user, as a page request
    would find it, holding `permission` if one is named.

    False once the user signed out (the session is flushed), the session expired,
    an admin deactivated the account, the password changed (Django's session
    hash no longer matches, and the session is flushed, as on a page request),
    or the user lost the permission (a role taken away).
    """
    from importlib import import_module
    from types import SimpleNamespace

    from django.conf import settings
    from django.contrib.auth import get_user

    if not session_key or user_id is None:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=session_key)
    user = get_user(SimpleNamespace(session=session))
    if not (user.is_authenticated and str(user.pk) == str(user_id)):
        return False
    return permission is None or user.has_perm(permission)
