"""The ORM state store: a cache that another writer of the same user cannot fool."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, IntegrityError

from detection.models import UserProfile
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db
from detection.services import (
    scored_batch_current,
    transaction_batch_score,
    transaction_batch_score_record,
)
from transactions.messages import transaction_message_parse

pytestmark = pytest.mark.django_db

START = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def message(n: int, *, amount: str = "20.00", user_id: str = "shared-user"):
    return transaction_message_parse(
        {
            "transaction_id": f"p-{n}",
            "user_id": user_id,
            "amount": amount,
            "timestamp": (START + timedelta(minutes=n)).isoformat(),
            "merchant_id": f"m-{n}",
            "location": "Lyon",
            "country": "FR",
        }
    )


def record(store: OrmStateStore, n: int, **kwargs):
    return transaction_batch_score_record(
        messages=[message(n, **kwargs)],
        store=store,
        config=scoring_config_from_db(model=None),
        source="test",
    )


def test_a_cached_state_moved_on_by_another_writer_is_reloaded():
    """Given the stream's cached state of a user and an API verdict for that user
    in between, the stream's next verdict builds on all three transactions."""
    stream_store = OrmStateStore()
    record(stream_store, 1)
    record(OrmStateStore(use_cache=False), 2, amount="40.00")  # POST /api/predict
    record(stream_store, 3)
    profile = UserProfile.objects.get(user_id="shared-user")
    assert profile.txn_count == 3
    assert [pair[1] for pair in profile.recent] == [20.0, 40.0, 20.0]
    assert profile.merchants == ["m-1", "m-2", "m-3"]


def test_the_cache_keeps_the_users_written_last_and_reloads_the_others():
    """A consumer's memory is bounded: with room for two users, the third user
    written evicts the one written longest ago, whose next verdict still builds
    on everything stored (read again from the database)."""
    store = OrmStateStore(max_cached=2)
    record(store, 1, user_id="u1")
    record(store, 2, user_id="u2")
    record(store, 3, user_id="u1")  # u1 written again: now the most recent
    record(store, 4, user_id="u3")
    assert list(store._cache) == ["u1", "u3"]
    record(store, 5, user_id="u2", amount="40.00")
    assert list(store._cache) == ["u3", "u2"]
    profile = UserProfile.objects.get(user_id="u2")
    assert profile.txn_count == 2
    assert [pair[1] for pair in profile.recent] == [20.0, 40.0]


def test_a_current_cached_state_is_used_without_reloading(django_assert_num_queries):
    """Given a cache that matches the database, one version query reads it."""
    store = OrmStateStore()
    record(store, 1)
    with django_assert_num_queries(1):
        states = store.states_get(["shared-user"])
    assert states["shared-user"].count == 1


def test_more_users_than_one_in_list_are_read_in_full():
    """Given 2,000 stored users (more than one IN list, IN_CHUNK keys, holds),
    a store without them cached reads every user's state, and a new user among
    them starts empty."""
    users = [f"many-{n:04d}" for n in range(2000)]
    transaction_batch_score_record(
        messages=[message(n, user_id=uid) for n, uid in enumerate(users)],
        store=OrmStateStore(use_cache=False),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    states = OrmStateStore().states_get([*users, "new-user"])
    assert len(states) == 2001
    assert all(states[uid].count == 1 for uid in users)
    assert states["new-user"].count == 0


def test_a_deleted_profile_is_not_resurrected_from_the_cache():
    """Given a cached user whose profile row was deleted, the state starts over."""
    store = OrmStateStore()
    record(store, 1)
    UserProfile.objects.all().delete()
    assert store.states_get(["shared-user"])["shared-user"].count == 0


def test_a_failed_batch_leaves_no_trace_in_the_cache(monkeypatch):
    """Given a cached user, when a batch for that user fails after scoring (the
    states were advanced in place) and the API then stores one transaction of the
    same user (so the stored count equals the failed batch's), the next batch
    starts from the stored state, not from the failed one."""
    store = OrmStateStore()
    record(store, 1)

    def broken(**kwargs):
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr("detection.services.recording.transactions_record", broken)
    with pytest.raises(DatabaseError):
        record(store, 2, amount="900.00")
    monkeypatch.undo()
    record(OrmStateStore(use_cache=False), 4, amount="40.00")
    record(store, 3)
    profile = UserProfile.objects.get(user_id="shared-user")
    assert profile.txn_count == 3
    assert profile.merchants == ["m-1", "m-4", "m-3"]
    assert [pair[1] for pair in profile.recent] == [20.0, 20.0, 40.0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_new_user_lose_no_update():
    """Given two threads (their own connections) scoring one never-seen user at
    once, one with the stream's cached store and one as the API, every applied
    transaction is counted: the writers take turns on the user's row."""
    from django.db import connection

    per_thread = 8
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(offset: int, store: OrmStateStore) -> None:
        try:
            barrier.wait(timeout=10)
            for n in range(per_thread):
                record(store, offset + n)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=writer, args=(0, OrmStateStore())),
        threading.Thread(target=writer, args=(100, OrmStateStore(use_cache=False))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    profile = UserProfile.objects.get(user_id="shared-user")
    assert profile.txn_count == 2 * per_thread
    assert len(profile.merchants) == 2 * per_thread


def write_after_scoring(monkeypatch, store: OrmStateStore, write) -> list:
    """Run `write()` once, right after `store`'s next batch is scored (outside its
    write transaction) and before it is stored; return that store's scorings."""
    real_score = transaction_batch_score
    scorings = []

    def score_then_write(**kwargs):
        result = real_score(**kwargs)
        if kwargs["store"] is store:  # not the interleaved writer's own scoring
            scorings.append(result)
            if len(scorings) == 1:
                write()
        return result

    monkeypatch.setattr(
        "detection.services.recording.transaction_batch_score", score_then_write
    )
    return scorings


# Outside a transaction, as the stream runs: inside one, batches score in place.
@pytest.mark.django_db(transaction=True)
def test_a_batch_scored_while_nobody_else_writes_is_stored_as_scored():
    """Given a cached user, the stream's batch is scored outside the write
    transaction and stored without scoring again."""
    store = OrmStateStore()
    record(store, 1)
    result = record(store, 2, amount="40.00")
    assert result.rescored is False
    assert UserProfile.objects.get(user_id="shared-user").txn_count == 2


@pytest.mark.django_db(transaction=True)
def test_a_write_between_scoring_and_storing_makes_the_batch_score_again(
    monkeypatch,
):
    """Given the stream's batch scored from a user's state, when the API stores a
    transaction of the same user before the batch is stored, the batch is scored
    again under the write lock: its verdict and the user's state build on both."""
    store = OrmStateStore()
    record(store, 1)
    config = scoring_config_from_db(model=None)
    scored = transaction_batch_score(messages=[message(3)], store=store, config=config)
    assert scored.versions == {"shared-user": (1, 1)}  # (applied, learned)
    assert scored_batch_current(scored=scored, store=store)

    api_write = record(OrmStateStore(use_cache=False), 2, amount="40.00")
    assert api_write.created
    assert not scored_batch_current(scored=scored, store=store)
    store.cache_clear()  # that batch is dropped: its states were advanced in place

    # The same interleaving through the one entry point: the API's write lands
    # after the stream scored (outside the transaction) and before it stores.
    calls = write_after_scoring(
        monkeypatch,
        store,
        lambda: record(OrmStateStore(use_cache=False), 4, amount="60.00"),
    )
    result = record(store, 3)
    monkeypatch.undo()
    assert result.rescored is True
    assert len(calls) == 2 and calls[0].versions == {"shared-user": (2, 2)}
    assert calls[1].versions == {"shared-user": (3, 3)}
    profile = UserProfile.objects.get(user_id="shared-user")
    assert profile.txn_count == 4
    assert profile.merchants == ["m-1", "m-2", "m-4", "m-3"]
    assert [pair[1] for pair in profile.recent] == [20.0, 40.0, 20.0, 60.0]


@pytest.mark.django_db(transaction=True)
def test_an_id_stored_for_another_user_meanwhile_fails_the_batch_whole(monkeypatch):
    """Given a batch scored for one user, when another writer stores the same
    transaction_id for ANOTHER user before the batch is stored, the insert is
    refused and nothing of the batch stays; tried again, the id counts as stored."""
    store = OrmStateStore()
    record(store, 1)
    write_after_scoring(
        monkeypatch,
        store,
        lambda: record(OrmStateStore(use_cache=False), 2, user_id="other"),
    )
    with pytest.raises(IntegrityError):
        record(store, 2)
    monkeypatch.undo()
    assert UserProfile.objects.get(user_id="shared-user").txn_count == 1
    again = record(store, 2)
    assert again.duplicates == ["p-2"] and not again.created
    assert UserProfile.objects.get(user_id="shared-user").txn_count == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_id_stored_for_the_same_user_while_reading_is_skipped(monkeypatch):
    """Given another writer that stores one of the batch's ids for the same user
    just before the batch reads that user's state, the batch counts the id as
    stored: no second application, no constraint error to retry."""
    store = OrmStateStore()
    record(store, 1)
    real_get = OrmStateStore.states_get
    interleaved = []

    def write_then_read(self, user_ids):
        if self is store and not interleaved:
            interleaved.append(record(OrmStateStore(use_cache=False), 2))
        return real_get(self, user_ids)

    monkeypatch.setattr(OrmStateStore, "states_get", write_then_read)
    result = record(store, 2)
    monkeypatch.undo()
    assert interleaved and interleaved[0].created
    assert result.duplicates == ["p-2"] and not result.created
    assert UserProfile.objects.get(user_id="shared-user").txn_count == 2
