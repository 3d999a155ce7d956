"""The ORM-backed user-state store, with an in-process cache in front of it."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from detection.models import UserProfile
from detection.state import UserState
from transactions.bulk import rows_insert

_FIELDS = (
    "log_amount_mean",
    "log_amount_m2",
    "last_epoch",
    "last_latitude",
    "last_longitude",
    "last_located_epoch",
    "last_location",
    "home_latitude",
    "home_longitude",
    "home_location",
    "countries",
    "merchants",
    "categories",
    "channels",
    "recent",
)


def profile_to_state(profile: UserProfile) -> UserState:
    """Return the UserState held in a profile row."""
    state = UserState(user_id=profile.user_id, count=profile.txn_count)
    for name in _FIELDS:
        setattr(state, name, getattr(profile, name))
    return state


def state_to_row(state: UserState) -> dict:
    """Return the UserProfile column values holding a UserState."""
    row = {name: getattr(state, name) for name in _FIELDS}
    row["user_id"], row["txn_count"] = state.user_id, state.count
    return row


class OrmStateStore:
    """User state in `UserProfile` rows, cached in this process.

    `states_get` hands out copies, so a batch whose database transaction rolls back
    leaves the cache untouched; `cache_commit` installs the new states only after the
    commit succeeded. The cache is checked, not trusted: every read compares the
    cached users' `txn_count` (it grows by one with each applied transaction, so it
    is the state's version) with the stored one, and reloads users that another
    writer moved on: POST /api/predict, or a consumer that owned the partition
    before a rebalance. The stream also calls `cache_clear` on every rebalance.
    With `use_cache=False` (the API) every read goes to the database.

    Inside a transaction the profile rows read are locked (SELECT ... FOR UPDATE
    where the database has it; SQLite's IMMEDIATE transactions already serialize
    writers), so two writers of one user take turns instead of losing an update.
    """

    def __init__(self, *, use_cache: bool = True) -> None:
        self.use_cache = use_cache
        self._cache: dict[str, UserState] = {}

    @staticmethod
    def _profiles(user_ids: list[str]):
        queryset = UserProfile.objects.filter(user_id__in=user_ids)
        if transaction.get_connection().in_atomic_block:
            queryset = queryset.select_for_update()
        return queryset

    def states_get(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Return working copies of these users' states."""
        wanted = sorted(set(user_ids))
        found = {uid: self._cache[uid] for uid in wanted if uid in self._cache}
        cached = sorted(found)
        for start in range(0, len(cached), 900):
            chunk = cached[start : start + 900]
            stored = dict(self._profiles(chunk).values_list("user_id", "txn_count"))
            for uid in chunk:
                if stored.get(uid) != found[uid].count:
                    del found[uid]
        missing = [uid for uid in wanted if uid not in found]
        for start in range(0, len(missing), 900):
            for profile in self._profiles(missing[start : start + 900]):
                state = profile_to_state(profile)
                found[state.user_id] = state
                if self.use_cache:
                    self._cache[state.user_id] = state
        return {
            uid: found[uid].copy() if uid in found else UserState(user_id=uid)
            for uid in wanted
        }

    def states_put(self, states: Iterable[UserState]) -> None:
        """Upsert the profiles (call inside the batch's database transaction)."""
        rows = [state_to_row(state) for state in states]
        if rows:
            rows_insert(
                model=UserProfile,
                rows=rows,
                unique_fields=["user_id"],
                update_fields=["txn_count", *_FIELDS, "updated_at"],
            )

    def cache_commit(self, states: Iterable[UserState]) -> None:
        """Install states in the cache once their transaction has committed."""
        if self.use_cache:
            for state in states:
                self._cache[state.user_id] = state

    def cache_clear(self) -> None:
        """Forget every cached state (after a rebalance or a failed batch)."""
        self._cache.clear()
