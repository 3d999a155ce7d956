"""The ORM-backed user-state store, with an in-process cache in front of it."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from django.db import transaction

from detection.models import UserProfile
from detection.state import UserState
from transactions.bulk import key_chunks, rows_insert, values_where_in

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
    state = UserState(
        user_id=profile.user_id,
        count=profile.txn_count,
        learned=profile.learned_count,
    )
    for name in _FIELDS:
        setattr(state, name, getattr(profile, name))
    return state


def state_to_row(state: UserState) -> dict:
    """Return the UserProfile column values holding a UserState."""
    row = {name: getattr(state, name) for name in _FIELDS}
    row["user_id"], row["txn_count"] = state.user_id, state.count
    row["learned_count"] = state.learned
    return row


class OrmStateStore:
    """User state in `UserProfile` rows, cached in this process.

    `states_get` hands out the cached states themselves, and scoring advances them in
    place: copying them was 10% of the stream's time. So a batch that fails must
    call `cache_clear` (`transaction_batch_score_record` does, for any exception);
    `cache_commit` installs the states of users new to the cache after the commit.
    The cache is checked, not trusted: every read fetches the
    users' stored version (`txn_count`, which grows by one with each applied
    transaction, and `learned_count`, which a label that re-teaches the profile
    also moves on: `UserState.version`) and reloads users that another writer
    moved on: POST
    /api/predict, or the consumer that owned the partition before a rebalance. The
    stream also calls `cache_clear` on every rebalance. With `use_cache=False` (the
    API) every state comes from the database; with `read_only=True` (what-if
    scoring) reads never lock or insert anything.

    Two writers of one user take turns instead of losing an update. On SQLite the
    IMMEDIATE transactions serialize writers. Where the database has row locks
    (PostgreSQL), a read inside a transaction locks the users' rows, in user_id
    order, with SELECT ... FOR UPDATE, after inserting empty rows for users it has
    never seen, so that a first-seen user has a row to lock too.
    """

    def __init__(
        self,
        *,
        use_cache: bool = True,
        read_only: bool = False,
        max_cached: int | None = None,
    ) -> None:
        from django.conf import settings

        self.use_cache = use_cache
        self.read_only = read_only
        # The cache keeps the most recently written users, up to this many (a
        # card's state is a few KB; an evicted one is simply read again).
        self.max_cached = (
            settings.STREAM_STATE_CACHE_MAX_USERS if max_cached is None else max_cached
        )
        self._cache: dict[str, UserState] = {}

    def _locking(self) -> bool:
        if self.read_only:
            return False
        connection = transaction.get_connection()
        return connection.in_atomic_block and connection.features.has_select_for_update

    def versions_get(self, user_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Return the users' stored versions ((0, 0) for users not stored).

        Inside a transaction on a database with row locks, the rows are locked
        first (see the class docstring), so the versions stay current until commit.
        """
        wanted = sorted(set(user_ids))
        lock = self._locking()
        if lock:
            rows_insert(
                model=UserProfile,
                rows=[{"user_id": uid} for uid in wanted if uid not in self._cache],
                ignore_conflicts=True,
            )
        versions = dict.fromkeys(wanted, (0, 0))
        if not lock:
            versions.update(
                (uid, (count, learned))
                for uid, count, learned in values_where_in(
                    model=UserProfile,
                    fields=["user_id", "txn_count", "learned_count"],
                    key="user_id",
                    keys=wanted,
                )
            )
            return versions
        # Row locks, taken in user_id order (two writers never wait on each other
        # in a cycle): the ORM's select_for_update.
        for chunk in key_chunks(wanted):
            queryset = (
                UserProfile.objects.filter(user_id__in=chunk)
                .order_by("user_id")
                .select_for_update()
            )
            versions.update(
                (uid, (count, learned))
                for uid, count, learned in queryset.values_list(
                    "user_id", "txn_count", "learned_count"
                )
            )
        return versions

    def states_get(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Return these users' states (new users: empty ones), to be advanced."""
        versions = self.versions_get(user_ids)
        wanted = list(versions)
        found: dict[str, UserState] = {}
        stale: list[str] = []
        for uid in wanted:
            cached = self._cache.get(uid)
            stored = versions[uid]
            if cached is not None and cached.version == stored:
                found[uid] = cached
            elif stored != (0, 0):
                stale.append(uid)
        for chunk in key_chunks(stale):
            for profile in UserProfile.objects.filter(user_id__in=chunk):
                state = profile_to_state(profile)
                found[state.user_id] = state
                if self.use_cache:
                    self._cache[state.user_id] = state
        return {uid: found.get(uid) or UserState(user_id=uid) for uid in wanted}

    def states_put(self, states: Iterable[UserState]) -> None:
        """Upsert the profiles (call inside the batch's database transaction)."""
        if self.read_only:
            raise RuntimeError("This state store is read-only (what-if scoring).")
        rows = [state_to_row(state) for state in states]
        if rows:
            rows_insert(
                model=UserProfile,
                rows=rows,
                unique_fields=["user_id"],
                update_fields=["txn_count", "learned_count", *_FIELDS, "updated_at"],
            )

    def cache_commit(self, states: Iterable[UserState]) -> None:
        """Install states in the cache once their transaction has committed.

        Each goes to the end of the cache's order (dicts keep insertion order);
        past `max_cached`, the users written longest ago are dropped.
        """
        if not self.use_cache:
            return
        cache = self._cache
        for state in states:
            cache.pop(state.user_id, None)
            cache[state.user_id] = state
        excess = len(cache) - self.max_cached
        if excess > 0:
            for uid in list(islice(cache, excess)):
                del cache[uid]

    def cache_clear(self) -> None:
        """Forget every cached state (after a rebalance or a failed batch)."""
        self._cache.clear()
